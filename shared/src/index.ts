export * from './models';
export * from './protocol';
export * from './rng';
export * from './shard';
export * from './sgd';
export * from './text';
