;; WebAssembly SIMD kernels for tabtrain's hot loops. The source of truth: `npm run build:kernels`
;; compiles it with wabt into kernels.wasm.ts, which the coordinator, the Node worker and the page
;; load (simd.ts); tests/unit/simd.test.ts checks that the committed bytes are this file's.
;;
;; Every kernel works on byte addresses into the one imported memory. The aggregation kernels
;; (add, check, sgd) walk 64 bytes (16 floats) per iteration and leave the last < 16 floats to the
;; caller.
;;
;;   add(dst, src, end) → 1 if every result is finite: f32 dst[i] += src[i] for dst ≤ i < end
;;   check(src, end)    → 1 if every float in [src, end) is finite
;;   sgd(w, g, end, k)  → f32 w[i] = fround(w[i] − k · g[i]), the product and difference in f64
;;
;; Adds are IEEE fp32, like a Float32Array `+=`, so sums are bit-identical to the scalar fold. The
;; finiteness test is on the bits (exponent all ones), OR-ed into one vector, so it costs no extra
;; pass. sgd is sgdStep's loop bit for bit: JavaScript evaluates `w[i] -= k * g[i]` in doubles and
;; rounds once on the store, and so does sgd (f64x2 lanes, then demote), so replicas that apply the
;; same update with the plain loop (workers, pages) stay bit-equal to the coordinator.
(module
  (import "env" "mem" (memory 1))

  (func (export "add") (param $dst i32) (param $src i32) (param $end i32) (result i32)
    (local $bad v128) (local $sum v128) (local $exp v128)
    (local.set $exp (i32x4.splat (i32.const 0x7f800000)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $dst) (local.get $end)))
        (v128.store offset=0 (local.get $dst)
          (local.tee $sum (f32x4.add (v128.load offset=0 (local.get $dst)) (v128.load offset=0 (local.get $src)))))
        (local.set $bad (v128.or (local.get $bad) (i32x4.eq (v128.and (local.get $sum) (local.get $exp)) (local.get $exp))))
        (v128.store offset=16 (local.get $dst)
          (local.tee $sum (f32x4.add (v128.load offset=16 (local.get $dst)) (v128.load offset=16 (local.get $src)))))
        (local.set $bad (v128.or (local.get $bad) (i32x4.eq (v128.and (local.get $sum) (local.get $exp)) (local.get $exp))))
        (v128.store offset=32 (local.get $dst)
          (local.tee $sum (f32x4.add (v128.load offset=32 (local.get $dst)) (v128.load offset=32 (local.get $src)))))
        (local.set $bad (v128.or (local.get $bad) (i32x4.eq (v128.and (local.get $sum) (local.get $exp)) (local.get $exp))))
        (v128.store offset=48 (local.get $dst)
          (local.tee $sum (f32x4.add (v128.load offset=48 (local.get $dst)) (v128.load offset=48 (local.get $src)))))
        (local.set $bad (v128.or (local.get $bad) (i32x4.eq (v128.and (local.get $sum) (local.get $exp)) (local.get $exp))))
        (local.set $dst (i32.add (local.get $dst) (i32.const 64)))
        (local.set $src (i32.add (local.get $src) (i32.const 64)))
        (br $next)))
    (i32.eqz (v128.any_true (local.get $bad))))

  (func (export "check") (param $src i32) (param $end i32) (result i32)
    (local $bad v128) (local $x v128) (local $exp v128)
    (local.set $exp (i32x4.splat (i32.const 0x7f800000)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $src) (local.get $end)))
        (local.set $x (v128.load offset=0 (local.get $src)))
        (local.set $bad (v128.or (local.get $bad) (i32x4.eq (v128.and (local.get $x) (local.get $exp)) (local.get $exp))))
        (local.set $x (v128.load offset=16 (local.get $src)))
        (local.set $bad (v128.or (local.get $bad) (i32x4.eq (v128.and (local.get $x) (local.get $exp)) (local.get $exp))))
        (local.set $x (v128.load offset=32 (local.get $src)))
        (local.set $bad (v128.or (local.get $bad) (i32x4.eq (v128.and (local.get $x) (local.get $exp)) (local.get $exp))))
        (local.set $x (v128.load offset=48 (local.get $src)))
        (local.set $bad (v128.or (local.get $bad) (i32x4.eq (v128.and (local.get $x) (local.get $exp)) (local.get $exp))))
        (local.set $src (i32.add (local.get $src) (i32.const 64)))
        (br $next)))
    (i32.eqz (v128.any_true (local.get $bad))))

  ;; Per 16 bytes: the low and the high two floats each promoted, w − k·g in f64, demoted, rejoined.
  (func (export "sgd") (param $w i32) (param $g i32) (param $end i32) (param $k f64)
    (local $W v128) (local $G v128) (local $K v128)
    (local.set $K (f64x2.splat (local.get $k)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $w) (local.get $end)))
        (local.set $W (v128.load offset=0 (local.get $w)))
        (local.set $G (v128.load offset=0 (local.get $g)))
        (v128.store offset=0 (local.get $w)
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
            (f32x4.demote_f64x2_zero (f64x2.sub
              (f64x2.promote_low_f32x4 (local.get $W))
              (f64x2.mul (f64x2.promote_low_f32x4 (local.get $G)) (local.get $K))))
            (f32x4.demote_f64x2_zero (f64x2.sub
              (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $W) (local.get $W)))
              (f64x2.mul (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $G) (local.get $G))) (local.get $K))))))
        (local.set $W (v128.load offset=16 (local.get $w)))
        (local.set $G (v128.load offset=16 (local.get $g)))
        (v128.store offset=16 (local.get $w)
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
            (f32x4.demote_f64x2_zero (f64x2.sub
              (f64x2.promote_low_f32x4 (local.get $W))
              (f64x2.mul (f64x2.promote_low_f32x4 (local.get $G)) (local.get $K))))
            (f32x4.demote_f64x2_zero (f64x2.sub
              (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $W) (local.get $W)))
              (f64x2.mul (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $G) (local.get $G))) (local.get $K))))))
        (local.set $W (v128.load offset=32 (local.get $w)))
        (local.set $G (v128.load offset=32 (local.get $g)))
        (v128.store offset=32 (local.get $w)
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
            (f32x4.demote_f64x2_zero (f64x2.sub
              (f64x2.promote_low_f32x4 (local.get $W))
              (f64x2.mul (f64x2.promote_low_f32x4 (local.get $G)) (local.get $K))))
            (f32x4.demote_f64x2_zero (f64x2.sub
              (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $W) (local.get $W)))
              (f64x2.mul (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $G) (local.get $G))) (local.get $K))))))
        (local.set $W (v128.load offset=48 (local.get $w)))
        (local.set $G (v128.load offset=48 (local.get $g)))
        (v128.store offset=48 (local.get $w)
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
            (f32x4.demote_f64x2_zero (f64x2.sub
              (f64x2.promote_low_f32x4 (local.get $W))
              (f64x2.mul (f64x2.promote_low_f32x4 (local.get $G)) (local.get $K))))
            (f32x4.demote_f64x2_zero (f64x2.sub
              (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $W) (local.get $W)))
              (f64x2.mul (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $G) (local.get $G))) (local.get $K))))))
        (local.set $w (i32.add (local.get $w) (i32.const 64)))
        (local.set $g (i32.add (local.get $g) (i32.const 64)))
        (br $next))))
)
