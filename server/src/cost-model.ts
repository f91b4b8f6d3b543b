// A cost model of one synchronous step, and a planner that picks which workers compute it and
// how many examples each (issue 13, part 3). Pure: the coordinator measures, this decides.
// Split by job; this module is the one place callers import them from:
//   cost-step.ts     the model: a step's predicted time from each worker's compute rate and link
//                    throughput, the coordinator link shared by every flow, and its fold/SGD/encode
//   cost-plan.ts     the planner: which workers and integer shard sizes make that time shortest
//   cost-measure.ts  keeping the measurements fresh: re-measuring benched workers, link estimates
export {
  downloadBytes, isMeasured, predictStep,
  type CoordinatorCost, type RunCost, type StepPrediction, type WorkerCost, type WorkerPrediction,
} from './cost-step';
export { PLAN_DEFAULTS, allocate, planStep, type PlanOptions, type PlannedShard, type StepPlan } from './cost-plan';
export { linkEstimate, probeDue, probeInterval } from './cost-measure';
