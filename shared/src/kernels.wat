;; WebAssembly SIMD kernels for tabtrain's hot loops. The source of truth: `npm run build:kernels`
;; compiles it with wabt into kernels.wasm.ts, which the coordinator, the Node worker and the page
;; load (simd.ts); tests/unit/simd.test.ts checks that the committed bytes are this file's.
;;
;; Every kernel works on byte addresses into the one imported memory. There are three families: the
;; coordinator's aggregation (add, check, sgd; simd.ts's SimdArena), the fp16 and int8 codecs
;; (compress.ts), further down, and PowerSGD's low-rank update (powersgd.ts), last. The
;; aggregation kernels walk 64 bytes (16 floats) per iteration and leave the last < 16 floats to
;; the caller.
;;
;;   add(dst, src, end) → 1 if every result is finite: f32 dst[i] += src[i] for dst ≤ i < end
;;   check(src, end)    → 1 if every float in [src, end) is finite
;;   sumSquares(src, end) → Σ x² over the floats in [src, end) (a multiple of 4), in f64
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

  ;; Four floats a turn, promoted to f64 before squaring: an fp32 square is exact in f64 and
  ;; cannot overflow it, so a finite frame always has a finite norm (the verifier's plausibility
  ;; check of fp16 frames, compress.ts halfNormSq). Two accumulators of two lanes each, summed
  ;; at the end: not the scalar loop's order, which a plausibility check does not need.
  (func (export "sumSquares") (param $src i32) (param $end i32) (result f64)
    (local $x v128) (local $lo v128) (local $hi v128) (local $s0 v128) (local $s1 v128)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $src) (local.get $end)))
        (local.set $x (v128.load (local.get $src)))
        (local.set $lo (f64x2.promote_low_f32x4 (local.get $x)))
        (local.set $hi (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $x) (local.get $x))))
        (local.set $s0 (f64x2.add (local.get $s0) (f64x2.mul (local.get $lo) (local.get $lo))))
        (local.set $s1 (f64x2.add (local.get $s1) (f64x2.mul (local.get $hi) (local.get $hi))))
        (local.set $src (i32.add (local.get $src) (i32.const 16)))
        (br $next)))
    (local.set $s0 (f64x2.add (local.get $s0) (local.get $s1)))
    (f64.add (f64x2.extract_lane 0 (local.get $s0)) (f64x2.extract_lane 1 (local.get $s0))))

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

  ;; ---- the fp16 and int8 codecs of compress.ts ----
  ;;
  ;; Each takes a count n of floats, a multiple of 16; compress.ts does the last < 16 of a run with
  ;; its plain loops, which are also the reference these are tested against bit for bit.
  ;;
  ;;   halfEncode(src, dst, n)           u16 dst[i] = the half of f32 src[i], exactly as toHalf
  ;;   halfDecode(src, dst, n) → 1 if no half is Inf/NaN: f32 dst[i] = the float of u16 src[i]
  ;;   int8Fold(g, e, n) → max |g[i] + e[i]|  (a double), and f32 e[i] = g[i] + e[i]
  ;;   int8Codes(e, c, n, scale, inv)    i8 c[i] = Math.round(e[i] · inv); f32 e[i] −= c[i] · scale
  ;;   int8Decode(c, dst, n, scale)      f32 dst[i] = c[i] · scale
  ;;
  ;; JavaScript does this arithmetic in doubles and rounds to fp32 on the store. An add, subtract
  ;; or multiply of two fp32 values rounded once to fp32 gives that same float (a double has more
  ;; than 2·24 + 2 bits, so rounding twice is innocuous), so those run in f32x4 lanes. Two things
  ;; JavaScript keeps in a double: int8's maximum (over the double sums) and its codes (Math.round
  ;; of a double product). The kernels get them from fp32 lanes where that provably gives the same
  ;; result, and redo the rare rest in f64, as int8Fold and int8Codes explain.

  ;; The codecs' constants. V8 rebuilds a v128.const (or the splat of a constant) at every use, even
  ;; inside a loop, at 3 instructions each; a mutable global it cannot, so each kernel loads those it
  ;; needs into locals before its loop, and there they stay in registers. Nothing writes them.
  (global $ABS    (mut v128) (v128.const i32x4 0x7fffffff 0x7fffffff 0x7fffffff 0x7fffffff))
  (global $MAX    (mut v128) (v128.const i32x4 0x477fefff 0x477fefff 0x477fefff 0x477fefff)) ;; just below 65520
  (global $BIAS   (mut v128) (v128.const i32x4 0x37fff001 0x37fff001 0x37fff001 0x37fff001)) ;; 0x38000000 − 0xfff: rebias, add just under half an lsb
  (global $ONE    (mut v128) (v128.const i32x4 1 1 1 1))
  (global $HALF   (mut v128) (v128.const f32x4 0.5 0.5 0.5 0.5))
  (global $NORMAL (mut v128) (v128.const i32x4 0x38800000 0x38800000 0x38800000 0x38800000)) ;; 2^-14, the smallest normal half
  (global $INF    (mut v128) (v128.const i32x4 0x7f800000 0x7f800000 0x7f800000 0x7f800000))
  (global $NAN    (mut v128) (v128.const i32x4 0x05ff 0x05ff 0x05ff 0x05ff)) ;; 0x7bff ^ 0x7e00
  (global $SIGN   (mut v128) (v128.const i32x4 0x8000 0x8000 0x8000 0x8000))
  (global $E31    (mut v128) (v128.const i32x4 0x0f7fffff 0x0f7fffff 0x0f7fffff 0x0f7fffff)) ;; a half's exponent 31, shifted into fp32's place
  (global $REBIAS (mut v128) (v128.const i32x4 0x38000000 0x38000000 0x38000000 0x38000000)) ;; (127 − 15) << 23
  (global $SUB    (mut v128) (v128.const i32x4 0x400 0x400 0x400 0x400)) ;; a half below this is subnormal
  (global $ULP    (mut v128) (v128.const f32x4 0x1p-24 0x1p-24 0x1p-24 0x1p-24)) ;; a subnormal half's unit
  (global $TIE    (mut v128) (v128.const f64x2 -0.5 -0.5))
  (global $DOWN   (mut v128) (v128.const f64x2 -1 -1))
  (global $MAGIC  (mut v128) (v128.const f32x4 12582912 12582912 12582912 12582912)) ;; 1.5 · 2^23
  (global $BYTE   (mut v128) (v128.const i32x4 0xff 0xff 0xff 0xff))
  (global $LIM    (mut v128) (v128.const f32x4 0.4998779296875 0.4998779296875 0.4998779296875 0.4998779296875)) ;; 0.5 − 2^-13

  ;; Four floats a turn (x: their bits, a: without the sign), as compress.ts's halfBits. A normal
  ;; half rounds the mantissa with integer adds (ties to even through the kept lsb); a is first
  ;; clamped to 0x477fefff, the float below 65520 (the tie that would round to Inf), which gives
  ;; 0x7bff: that is the saturation. Below 2^-14, |x| + 0.5 rounds |x| to a multiple of 2^-24 (the
  ;; ulp of 0.5) in one IEEE add, ties to even, which leaves the subnormal half in the low mantissa
  ;; bits. NaN stays NaN: 0x7bff ^ 0x05ff is 0x7e00.
  (func (export "halfEncode") (param $src i32) (param $dst i32) (param $n i32)
    (local $end i32) (local $x v128) (local $a v128) (local $c v128)
    (local $ABS v128) (local $MAX v128) (local $BIAS v128) (local $ONE v128) (local $HALF v128) (local $NORMAL v128) (local $INF v128) (local $NAN v128)
    (local.set $ABS (global.get $ABS))
    (local.set $MAX (global.get $MAX))
    (local.set $BIAS (global.get $BIAS))
    (local.set $ONE (global.get $ONE))
    (local.set $HALF (global.get $HALF))
    (local.set $NORMAL (global.get $NORMAL))
    (local.set $INF (global.get $INF))
    (local.set $NAN (global.get $NAN))
    (local.set $end (i32.add (local.get $src) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $src) (local.get $end)))
        (local.set $x (v128.load (local.get $src)))
        (local.set $a (v128.and (local.get $x) (local.get $ABS)))
        (local.set $c (i32x4.min_s (local.get $a) (local.get $MAX)))
        (local.set $c (v128.bitselect
          (i32x4.sub (f32x4.add (local.get $a) (local.get $HALF)) (local.get $HALF))
          (i32x4.shr_u (i32x4.add (i32x4.sub (local.get $c) (local.get $BIAS))
                                  (v128.and (i32x4.shr_u (local.get $c) (i32.const 13)) (local.get $ONE)))
                       (i32.const 13))
          (i32x4.lt_s (local.get $a) (local.get $NORMAL))))
        (local.set $c (v128.xor (local.get $c) (v128.and (i32x4.gt_s (local.get $a) (local.get $INF)) (local.get $NAN))))
        (local.set $c (v128.or (local.get $c) (i32x4.shr_u (v128.xor (local.get $x) (local.get $a)) (i32.const 16)))) ;; the sign
        (v128.store64_lane 0 (local.get $dst) (i16x8.narrow_i32x4_u (local.get $c) (local.get $c)))
        (local.set $src (i32.add (local.get $src) (i32.const 16)))
        (local.set $dst (i32.add (local.get $dst) (i32.const 8)))
        (br $next))))

  ;; Four halves a turn (h, one per i32 lane; a without the sign). A normal half is its exponent
  ;; and mantissa shifted into fp32's place and rebiased by 112 (an integer add); a subnormal one
  ;; is its mantissa, converted, times 2^-24 (exact: a power of two). That keeps fp32 subnormals
  ;; out of the arithmetic: lanes with one next to normal ones run ~3 times slower on this CPU
  ;; (AMD EPYC). Exponent 31 (Inf, NaN) is rebiased twice, to fp32's 255, so that Inf stays Inf,
  ;; and noted.
  (func (export "halfDecode") (param $src i32) (param $dst i32) (param $n i32) (result i32)
    (local $end i32) (local $h v128) (local $s v128) (local $a v128) (local $m v128) (local $special v128) (local $bad v128)
    (local $SIGN v128) (local $E31 v128) (local $REBIAS v128) (local $SUB v128) (local $ULP v128)
    (local.set $SIGN (global.get $SIGN))
    (local.set $E31 (global.get $E31))
    (local.set $REBIAS (global.get $REBIAS))
    (local.set $SUB (global.get $SUB))
    (local.set $ULP (global.get $ULP))
    (local.set $end (i32.add (local.get $src) (i32.shl (local.get $n) (i32.const 1))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $src) (local.get $end)))
        (local.set $h (v128.load16x4_u (local.get $src)))
        (local.set $s (v128.and (local.get $h) (local.get $SIGN)))
        (local.set $a (v128.xor (local.get $h) (local.get $s)))
        (local.set $m (i32x4.shl (local.get $a) (i32.const 13)))
        (local.set $special (i32x4.gt_s (local.get $m) (local.get $E31)))
        (local.set $bad (v128.or (local.get $bad) (local.get $special)))
        (v128.store (local.get $dst) (v128.or (i32x4.shl (local.get $s) (i32.const 16))
          (v128.bitselect (f32x4.mul (f32x4.convert_i32x4_s (local.get $a)) (local.get $ULP))
            (i32x4.add (i32x4.add (local.get $m) (local.get $REBIAS)) (v128.and (local.get $special) (local.get $REBIAS))) ;; twice for exponent 31 → 255
            (i32x4.lt_s (local.get $a) (local.get $SUB)))))
        (local.set $src (i32.add (local.get $src) (i32.const 8)))
        (local.set $dst (i32.add (local.get $dst) (i32.const 16)))
        (br $next)))
    (i32.eqz (v128.any_true (local.get $bad))))

  ;; Sixteen floats a turn. JavaScript's maximum is over the double sums d = g + e, not the fp32
  ;; sums s it stores; but fround is monotonic, so the largest |d| is among the sums whose |s| is
  ;; the largest |s| (M), and nowhere else. So the sixteen are summed in f32 and compared with M,
  ;; and only where one reaches M (rarely, once M has grown) are they redone one by one, with d in
  ;; f64: a larger |s| starts the maximum D of |d| afresh, an equal one adds to it. A NaN reaches
  ;; nothing, as `if (m > max) max = m` skips it. Until M > 0, sums of 0 need no look: they are
  ;; exact (two floats under 2^-126 add exactly). Data where many sums tie with M (a constant
  ;; tensor) redoes most sixteens: about 3 times slower, still far ahead of the plain loop.
  (func (export "int8Fold") (param $g i32) (param $e i32) (param $n i32) (result f64)
    (local $end i32) (local $k i32) (local $m f32) (local $d f64) (local $M f32) (local $D f64)
    (local $s0 v128) (local $s1 v128) (local $s2 v128) (local $s3 v128) (local $hit v128) (local $atLeast v128) (local $ABS v128)
    (local.set $ABS (global.get $ABS))
    (local.set $atLeast (f32x4.splat (f32.const 0x1p-149))) ;; M, but above 0
    (local.set $end (i32.add (local.get $e) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $e) (local.get $end)))
        (local.set $hit (v128.const i64x2 0 0))
        (local.set $s0 (f32x4.add (v128.load offset=0 (local.get $g)) (v128.load offset=0 (local.get $e))))
        (local.set $hit (v128.or (local.get $hit) (f32x4.ge (v128.and (local.get $s0) (local.get $ABS)) (local.get $atLeast))))
        (local.set $s1 (f32x4.add (v128.load offset=16 (local.get $g)) (v128.load offset=16 (local.get $e))))
        (local.set $hit (v128.or (local.get $hit) (f32x4.ge (v128.and (local.get $s1) (local.get $ABS)) (local.get $atLeast))))
        (local.set $s2 (f32x4.add (v128.load offset=32 (local.get $g)) (v128.load offset=32 (local.get $e))))
        (local.set $hit (v128.or (local.get $hit) (f32x4.ge (v128.and (local.get $s2) (local.get $ABS)) (local.get $atLeast))))
        (local.set $s3 (f32x4.add (v128.load offset=48 (local.get $g)) (v128.load offset=48 (local.get $e))))
        (local.set $hit (v128.or (local.get $hit) (f32x4.ge (v128.and (local.get $s3) (local.get $ABS)) (local.get $atLeast))))
        (if (v128.any_true (local.get $hit))
          (then
            (local.set $k (i32.const 16))
            (loop $each
              (local.set $d (f64.abs (f64.add (f64.promote_f32 (f32.load (local.get $g))) (f64.promote_f32 (f32.load (local.get $e))))))
              (f32.store (local.get $e) (f32.add (f32.load (local.get $g)) (f32.load (local.get $e))))
              (local.set $m (f32.abs (f32.load (local.get $e))))
              (if (f32.gt (local.get $m) (local.get $M))
                (then (local.set $M (local.get $m)) (local.set $D (local.get $d)))
                (else (if (f32.eq (local.get $m) (local.get $M)) (then (local.set $D (f64.max (local.get $D) (local.get $d)))))))
              (local.set $g (i32.add (local.get $g) (i32.const 4)))
              (local.set $e (i32.add (local.get $e) (i32.const 4)))
              (br_if $each (local.tee $k (i32.sub (local.get $k) (i32.const 1)))))
            (local.set $atLeast (f32x4.splat (f32.max (local.get $M) (f32.const 0x1p-149)))))
          (else
            (v128.store offset=0 (local.get $e) (local.get $s0))
            (v128.store offset=16 (local.get $e) (local.get $s1))
            (v128.store offset=32 (local.get $e) (local.get $s2))
            (v128.store offset=48 (local.get $e) (local.get $s3))
            (local.set $g (i32.add (local.get $g) (i32.const 64)))
            (local.set $e (i32.add (local.get $e) (i32.const 64)))))
        (br $next)))
    (local.get $D))

  ;; Sixteen floats a turn; JavaScript's code is Math.round(x) for the double x = v · inv.
  ;;
  ;; Mostly in f32: y = v · fround(inv) differs from x by under 2^-22 · |x| + 2^-150, and |x| is
  ;; under 191 (compress.ts passes |v| at most the piece's largest, and scale that over 127, at
  ;; worst 1.5 times too small when subnormal), so by under 2^-14. Where y is more than 2^-13 from
  ;; the nearest half-integer, x is then on the same side of every half-integer, and Math.round(x)
  ;; is nearest(y), −0 included. When a lane of the sixteen is that close (about 1 float in 4,000;
  ;; every tie), or NaN or Inf, the sixteen are done in f64 as JavaScript does them: nearest(x),
  ;; plus one where that went down from a tie (r − x = −0.5); subtracting +0 elsewhere keeps −0,
  ;; as Math.round(−0.2) is −0.
  ;;
  ;; An Int8Array store keeps an integer's low byte (it wraps; NaN is 0): r + 1.5 · 2^23 holds r in
  ;; its low mantissa bits, two's complement, and the byte is taken from there.
  (func (export "int8Codes") (param $e i32) (param $c i32) (param $n i32) (param $scale f32) (param $inv f64)
    (local $end i32) (local $k i32) (local $y v128) (local $ok v128) (local $v v128) (local $x v128) (local $r v128) (local $q v128)
    (local $v0 v128) (local $v1 v128) (local $v2 v128) (local $v3 v128) (local $r0 v128) (local $r1 v128) (local $r2 v128) (local $r3 v128)
    (local $S v128) (local $I v128) (local $I32 v128) (local $ABS v128) (local $LIM v128) (local $TIE v128) (local $DOWN v128) (local $MAGIC v128) (local $BYTE v128)
    (local.set $S (f32x4.splat (local.get $scale)))
    (local.set $I (f64x2.splat (local.get $inv)))
    (local.set $I32 (f32x4.splat (f32.demote_f64 (local.get $inv))))
    (local.set $ABS (global.get $ABS))
    (local.set $LIM (global.get $LIM))
    (local.set $TIE (global.get $TIE))
    (local.set $DOWN (global.get $DOWN))
    (local.set $MAGIC (global.get $MAGIC))
    (local.set $BYTE (global.get $BYTE))
    (local.set $end (i32.add (local.get $e) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $e) (local.get $end)))
        (local.set $ok (local.get $ABS)) ;; all lanes true (non-zero)
        (local.set $v0 (v128.load offset=0 (local.get $e)))
        (local.set $y (f32x4.mul (local.get $v0) (local.get $I32)))
        (local.set $r0 (f32x4.nearest (local.get $y)))
        (local.set $ok (v128.and (local.get $ok) (f32x4.lt (v128.and (f32x4.sub (local.get $y) (local.get $r0)) (local.get $ABS)) (local.get $LIM))))
        (local.set $v1 (v128.load offset=16 (local.get $e)))
        (local.set $y (f32x4.mul (local.get $v1) (local.get $I32)))
        (local.set $r1 (f32x4.nearest (local.get $y)))
        (local.set $ok (v128.and (local.get $ok) (f32x4.lt (v128.and (f32x4.sub (local.get $y) (local.get $r1)) (local.get $ABS)) (local.get $LIM))))
        (local.set $v2 (v128.load offset=32 (local.get $e)))
        (local.set $y (f32x4.mul (local.get $v2) (local.get $I32)))
        (local.set $r2 (f32x4.nearest (local.get $y)))
        (local.set $ok (v128.and (local.get $ok) (f32x4.lt (v128.and (f32x4.sub (local.get $y) (local.get $r2)) (local.get $ABS)) (local.get $LIM))))
        (local.set $v3 (v128.load offset=48 (local.get $e)))
        (local.set $y (f32x4.mul (local.get $v3) (local.get $I32)))
        (local.set $r3 (f32x4.nearest (local.get $y)))
        (local.set $ok (v128.and (local.get $ok) (f32x4.lt (v128.and (f32x4.sub (local.get $y) (local.get $r3)) (local.get $ABS)) (local.get $LIM))))
        (if (i32x4.all_true (local.get $ok))
          (then
            (v128.store offset=0 (local.get $e) (f32x4.sub (local.get $v0) (f32x4.mul (local.get $r0) (local.get $S))))
            (local.set $r0 (v128.and (f32x4.add (local.get $r0) (local.get $MAGIC)) (local.get $BYTE)))
            (v128.store offset=16 (local.get $e) (f32x4.sub (local.get $v1) (f32x4.mul (local.get $r1) (local.get $S))))
            (local.set $r1 (v128.and (f32x4.add (local.get $r1) (local.get $MAGIC)) (local.get $BYTE)))
            (v128.store offset=32 (local.get $e) (f32x4.sub (local.get $v2) (f32x4.mul (local.get $r2) (local.get $S))))
            (local.set $r2 (v128.and (f32x4.add (local.get $r2) (local.get $MAGIC)) (local.get $BYTE)))
            (v128.store offset=48 (local.get $e) (f32x4.sub (local.get $v3) (f32x4.mul (local.get $r3) (local.get $S))))
            (local.set $r3 (v128.and (f32x4.add (local.get $r3) (local.get $MAGIC)) (local.get $BYTE)))
            (v128.store (local.get $c) (i8x16.narrow_i16x8_u (i16x8.narrow_i32x4_u (local.get $r0) (local.get $r1)) (i16x8.narrow_i32x4_u (local.get $r2) (local.get $r3))))
            (local.set $e (i32.add (local.get $e) (i32.const 64)))
            (local.set $c (i32.add (local.get $c) (i32.const 16))))
          (else
            (local.set $k (i32.const 4))
            (loop $exact ;; four floats a turn, two pairs in f64
              (local.set $v (v128.load (local.get $e)))
              (local.set $x (f64x2.mul (f64x2.promote_low_f32x4 (local.get $v)) (local.get $I)))
              (local.set $r (f64x2.nearest (local.get $x)))
              (local.set $q (f32x4.demote_f64x2_zero
                (f64x2.sub (local.get $r) (v128.and (f64x2.eq (f64x2.sub (local.get $r) (local.get $x)) (local.get $TIE)) (local.get $DOWN)))))
              (local.set $x (f64x2.mul (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $v) (local.get $v))) (local.get $I)))
              (local.set $r (f64x2.nearest (local.get $x)))
              (local.set $q (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $q) (f32x4.demote_f64x2_zero
                (f64x2.sub (local.get $r) (v128.and (f64x2.eq (f64x2.sub (local.get $r) (local.get $x)) (local.get $TIE)) (local.get $DOWN))))))
              (v128.store (local.get $e) (f32x4.sub (local.get $v) (f32x4.mul (local.get $q) (local.get $S))))
              (local.set $q (v128.and (f32x4.add (local.get $q) (local.get $MAGIC)) (v128.and (f32x4.eq (local.get $q) (local.get $q)) (local.get $BYTE)))) ;; NaN → 0
              (local.set $q (i16x8.narrow_i32x4_u (local.get $q) (local.get $q)))
              (v128.store32_lane 0 (local.get $c) (i8x16.narrow_i16x8_u (local.get $q) (local.get $q)))
              (local.set $e (i32.add (local.get $e) (i32.const 16)))
              (local.set $c (i32.add (local.get $c) (i32.const 4)))
              (br_if $exact (local.tee $k (i32.sub (local.get $k) (i32.const 1)))))))
        (br $next))))

  ;; Sixteen codes a turn. code · scale is exact in a double (7 + 24 bits), so one f32 multiply
  ;; rounds it as JavaScript's store does.
  (func (export "int8Decode") (param $c i32) (param $dst i32) (param $n i32) (param $scale f32)
    (local $end i32) (local $S v128) (local $b v128)
    (local.set $S (f32x4.splat (local.get $scale)))
    (local.set $end (i32.add (local.get $c) (local.get $n)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $c) (local.get $end)))
        (local.set $b (v128.load (local.get $c)))
        (v128.store offset=0 (local.get $dst) (f32x4.mul (local.get $S) (f32x4.convert_i32x4_s (i32x4.extend_low_i16x8_s (i16x8.extend_low_i8x16_s (local.get $b))))))
        (v128.store offset=16 (local.get $dst) (f32x4.mul (local.get $S) (f32x4.convert_i32x4_s (i32x4.extend_high_i16x8_s (i16x8.extend_low_i8x16_s (local.get $b))))))
        (v128.store offset=32 (local.get $dst) (f32x4.mul (local.get $S) (f32x4.convert_i32x4_s (i32x4.extend_low_i16x8_s (i16x8.extend_high_i8x16_s (local.get $b))))))
        (v128.store offset=48 (local.get $dst) (f32x4.mul (local.get $S) (f32x4.convert_i32x4_s (i32x4.extend_high_i16x8_s (i16x8.extend_high_i8x16_s (local.get $b))))))
        (local.set $c (i32.add (local.get $c) (i32.const 16)))
        (local.set $dst (i32.add (local.get $dst) (i32.const 64)))
        (br $next))))

  ;; ---- PowerSGD's low-rank update (powersgd.ts) ----
  ;;
  ;;   lowRankApply(w, rows, cols, p, ps, q, rank, k), for i < rows and j < cols:
  ;;     f32 w[i][j] = fround(w[i][j] − k · d),  d = Σ_(l < rank) p[l][i] · q[l][j]
  ;;   w: rows × cols f32, row-major; p[l][i]: the f64 at p + l·ps + 8i; q[l][j]: the f64 at q + 8(l·cols + j)
  ;;
  ;; The factors come in already promoted to f64 (exact: every f32 is an f64), so the inner loop is
  ;; loads, multiplies and adds, with no conversion. d is summed in f64 in l order, starting from
  ;; the l = 0 product, and rounded once on the store: powersgd.ts's plain loop, bit for bit. A
  ;; product of two floats is exact in f64, and f64x2 lanes add, multiply and subtract as
  ;; JavaScript's doubles do (neither fuses a multiply into an add). Every replica applies the
  ;; update through this kernel or that loop, so all stay bit-equal.
  ;;
  ;; Two rows a turn (i and i + 1; the last row of an odd count goes as i twice: both results are
  ;; worked out from the same loaded weights before either store, so the second store writes the
  ;; first's bits), four columns a turn (two f64x2 accumulators a row), so each q load serves both
  ;; rows. p[l][i] and p[l][i + 1] are constant along the rows, so for l < 4 they are splat once
  ;; a row pair (A0-A3, B0-B3) and the terms are written out, with an exit after each
  ;; (br_if on rank, the same way every turn); terms l ≥ 4 go through a loop that loads and splats
  ;; p each turn. The last cols mod 4 go one by one in scalar f64 ($lowRankTail), a row at a time.
  ;; AlexNet at rank 4 (46.8M weights, one apply on a busy 2-core machine): ~50-54 → ~35-44 ms,
  ;; against 17-24 ms for a copy of the weights; rank 8 ~90-100 → ~65-80 ms.
  (func (export "lowRankApply") (param $w i32) (param $rows i32) (param $cols i32) (param $p i32) (param $ps i32) (param $q i32) (param $rank i32) (param $k f64)
    (local $cb i32) (local $qb i32) (local $q2 i32) (local $q3 i32) (local $wEnd i32)
    (local $a i32) (local $b i32) (local $pb i32) (local $pd i32) (local $p3 i32) (local $x i32) (local $y i32) (local $vecEnd i32)
    (local $qa i32) (local $ql i32) (local $pl i32) (local $l i32)
    (local $K v128) (local $A0 v128) (local $A1 v128) (local $A2 v128) (local $A3 v128) (local $B0 v128) (local $B1 v128) (local $B2 v128) (local $B3 v128)
    (local $P v128) (local $R v128) (local $Q v128) (local $a0 v128) (local $a1 v128) (local $b0 v128) (local $b1 v128) (local $V v128) (local $U v128)
    (local.set $K (f64x2.splat (local.get $k)))
    (local.set $cb (i32.shl (local.get $cols) (i32.const 2))) ;; bytes of a weights row
    (local.set $qb (i32.shl (local.get $cols) (i32.const 3))) ;; bytes of a q row (f64): q[1][j] − q[0][j]
    (local.set $q2 (i32.shl (local.get $qb) (i32.const 1)))
    (local.set $q3 (i32.add (local.get $q2) (local.get $qb)))
    (local.set $a (local.get $w))
    (local.set $wEnd (i32.add (local.get $w) (i32.mul (local.get $rows) (local.get $cb))))
    (block $rowsDone
      (loop $nextRows ;; row i at a, row i + 1 at b (or b = a)
        (br_if $rowsDone (i32.ge_u (local.get $a) (local.get $wEnd)))
        (local.set $b (i32.add (local.get $a) (local.get $cb)))
        (local.set $pb (i32.add (local.get $p) (i32.const 8)))
        (if (i32.ge_u (local.get $b) (local.get $wEnd)) (then (local.set $b (local.get $a)) (local.set $pb (local.get $p))))
        (local.set $pd (i32.sub (local.get $pb) (local.get $p))) ;; p[l][i + 1] − p[l][i]: 8, or 0
        (local.set $p3 (i32.add (local.get $p) (i32.mul (local.get $ps) (i32.const 3)))) ;; p[3][i]
        (local.set $A0 (v128.load64_splat (local.get $p))) (local.set $B0 (v128.load64_splat (local.get $pb)))
        (if (i32.gt_u (local.get $rank) (i32.const 1)) (then
          (local.set $pl (i32.add (local.get $p) (local.get $ps)))
          (local.set $A1 (v128.load64_splat (local.get $pl))) (local.set $B1 (v128.load64_splat (i32.add (local.get $pl) (local.get $pd))))
          (if (i32.gt_u (local.get $rank) (i32.const 2)) (then
            (local.set $pl (i32.add (local.get $pl) (local.get $ps)))
            (local.set $A2 (v128.load64_splat (local.get $pl))) (local.set $B2 (v128.load64_splat (i32.add (local.get $pl) (local.get $pd))))
            (if (i32.gt_u (local.get $rank) (i32.const 3)) (then
              (local.set $A3 (v128.load64_splat (local.get $p3))) (local.set $B3 (v128.load64_splat (i32.add (local.get $p3) (local.get $pd))))))))))
        (local.set $x (local.get $a)) ;; w[i][j]
        (local.set $y (local.get $b)) ;; w[i + 1][j]
        (local.set $qa (local.get $q)) ;; q[0][j]
        (local.set $vecEnd (i32.add (local.get $a) (i32.and (local.get $cb) (i32.const -16))))
        (if (i32.lt_u (local.get $x) (local.get $vecEnd)) (then
          (loop $nextVec
            (local.set $Q (v128.load (local.get $qa)))
            (local.set $a0 (f64x2.mul (local.get $A0) (local.get $Q))) (local.set $b0 (f64x2.mul (local.get $B0) (local.get $Q)))
            (local.set $Q (v128.load offset=16 (local.get $qa)))
            (local.set $a1 (f64x2.mul (local.get $A0) (local.get $Q))) (local.set $b1 (f64x2.mul (local.get $B0) (local.get $Q)))
            (block $sum
              (br_if $sum (i32.le_u (local.get $rank) (i32.const 1)))
              (local.set $ql (i32.add (local.get $qa) (local.get $qb))) ;; q[1][j]
              (local.set $Q (v128.load (local.get $ql)))
              (local.set $a0 (f64x2.add (local.get $a0) (f64x2.mul (local.get $A1) (local.get $Q)))) (local.set $b0 (f64x2.add (local.get $b0) (f64x2.mul (local.get $B1) (local.get $Q))))
              (local.set $Q (v128.load offset=16 (local.get $ql)))
              (local.set $a1 (f64x2.add (local.get $a1) (f64x2.mul (local.get $A1) (local.get $Q)))) (local.set $b1 (f64x2.add (local.get $b1) (f64x2.mul (local.get $B1) (local.get $Q))))
              (br_if $sum (i32.le_u (local.get $rank) (i32.const 2)))
              (local.set $ql (i32.add (local.get $qa) (local.get $q2))) ;; q[2][j]
              (local.set $Q (v128.load (local.get $ql)))
              (local.set $a0 (f64x2.add (local.get $a0) (f64x2.mul (local.get $A2) (local.get $Q)))) (local.set $b0 (f64x2.add (local.get $b0) (f64x2.mul (local.get $B2) (local.get $Q))))
              (local.set $Q (v128.load offset=16 (local.get $ql)))
              (local.set $a1 (f64x2.add (local.get $a1) (f64x2.mul (local.get $A2) (local.get $Q)))) (local.set $b1 (f64x2.add (local.get $b1) (f64x2.mul (local.get $B2) (local.get $Q))))
              (br_if $sum (i32.le_u (local.get $rank) (i32.const 3)))
              (local.set $ql (i32.add (local.get $qa) (local.get $q3))) ;; q[3][j]
              (local.set $Q (v128.load (local.get $ql)))
              (local.set $a0 (f64x2.add (local.get $a0) (f64x2.mul (local.get $A3) (local.get $Q)))) (local.set $b0 (f64x2.add (local.get $b0) (f64x2.mul (local.get $B3) (local.get $Q))))
              (local.set $Q (v128.load offset=16 (local.get $ql)))
              (local.set $a1 (f64x2.add (local.get $a1) (f64x2.mul (local.get $A3) (local.get $Q)))) (local.set $b1 (f64x2.add (local.get $b1) (f64x2.mul (local.get $B3) (local.get $Q))))
              (br_if $sum (i32.le_u (local.get $rank) (i32.const 4)))
              (local.set $pl (local.get $p3))
              (local.set $l (i32.const 4))
              (loop $nextTerm ;; l = 4 .. rank − 1
                (local.set $pl (i32.add (local.get $pl) (local.get $ps)))
                (local.set $ql (i32.add (local.get $ql) (local.get $qb)))
                (local.set $P (v128.load64_splat (local.get $pl))) (local.set $R (v128.load64_splat (i32.add (local.get $pl) (local.get $pd))))
                (local.set $Q (v128.load (local.get $ql)))
                (local.set $a0 (f64x2.add (local.get $a0) (f64x2.mul (local.get $P) (local.get $Q)))) (local.set $b0 (f64x2.add (local.get $b0) (f64x2.mul (local.get $R) (local.get $Q))))
                (local.set $Q (v128.load offset=16 (local.get $ql)))
                (local.set $a1 (f64x2.add (local.get $a1) (f64x2.mul (local.get $P) (local.get $Q)))) (local.set $b1 (f64x2.add (local.get $b1) (f64x2.mul (local.get $R) (local.get $Q))))
                (br_if $nextTerm (i32.lt_u (local.tee $l (i32.add (local.get $l) (i32.const 1))) (local.get $rank)))))
            (local.set $V (v128.load (local.get $x))) (local.set $U (v128.load (local.get $y))) ;; both before either store: y may be x
            (v128.store (local.get $x) (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
              (f32x4.demote_f64x2_zero (f64x2.sub (f64x2.promote_low_f32x4 (local.get $V)) (f64x2.mul (local.get $K) (local.get $a0))))
              (f32x4.demote_f64x2_zero (f64x2.sub (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $V) (local.get $V))) (f64x2.mul (local.get $K) (local.get $a1))))))
            (v128.store (local.get $y) (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
              (f32x4.demote_f64x2_zero (f64x2.sub (f64x2.promote_low_f32x4 (local.get $U)) (f64x2.mul (local.get $K) (local.get $b0))))
              (f32x4.demote_f64x2_zero (f64x2.sub (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $U) (local.get $U))) (f64x2.mul (local.get $K) (local.get $b1))))))
            (local.set $x (i32.add (local.get $x) (i32.const 16)))
            (local.set $y (i32.add (local.get $y) (i32.const 16)))
            (local.set $qa (i32.add (local.get $qa) (i32.const 32)))
            (br_if $nextVec (i32.lt_u (local.get $x) (local.get $vecEnd))))))
        (call $lowRankTail (local.get $x) (i32.add (local.get $a) (local.get $cb)) (local.get $p) (local.get $ps) (local.get $qa) (local.get $qb) (local.get $rank) (local.get $k))
        (if (i32.ne (local.get $b) (local.get $a)) (then
          (call $lowRankTail (local.get $y) (i32.add (local.get $b) (local.get $cb)) (local.get $pb) (local.get $ps) (local.get $qa) (local.get $qb) (local.get $rank) (local.get $k))))
        (local.set $a (i32.add (local.get $b) (local.get $cb)))
        (local.set $p (i32.add (local.get $p) (i32.const 16))) ;; p[0][i + 2]
        (br $nextRows))))

  ;; lowRankApply's last columns of one row, x to end, one by one in scalar f64: p at p[0][i], qa at
  ;; q[0][j] of x's column.
  (func $lowRankTail (param $x i32) (param $end i32) (param $p i32) (param $ps i32) (param $qa i32) (param $qb i32) (param $rank i32) (param $k f64)
    (local $pl i32) (local $ql i32) (local $l i32) (local $d f64)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $x) (local.get $end)))
        (local.set $d (f64.mul (f64.load (local.get $p)) (f64.load (local.get $qa))))
        (local.set $pl (local.get $p))
        (local.set $ql (local.get $qa))
        (local.set $l (i32.const 1))
        (block $termsDone
          (loop $nextTerm
            (br_if $termsDone (i32.ge_u (local.get $l) (local.get $rank)))
            (local.set $pl (i32.add (local.get $pl) (local.get $ps)))
            (local.set $ql (i32.add (local.get $ql) (local.get $qb)))
            (local.set $d (f64.add (local.get $d) (f64.mul (f64.load (local.get $pl)) (f64.load (local.get $ql)))))
            (local.set $l (i32.add (local.get $l) (i32.const 1)))
            (br $nextTerm)))
        (f32.store (local.get $x) (f32.demote_f64 (f64.sub (f64.promote_f32 (f32.load (local.get $x))) (f64.mul (local.get $k) (local.get $d)))))
        (local.set $x (i32.add (local.get $x) (i32.const 4)))
        (local.set $qa (i32.add (local.get $qa) (i32.const 8)))
        (br $next))))

  ;; ---- a training step's max pool backward on tfjs's wasm heap (client/src/wasm-step-kernels.ts) ----
  ;;
  ;;   maxPoolGrad(x, dy, acc, …)  f64 acc[first maximum of each window] += dy[window], NHWC
  ;;   demote(acc, dst, n)         f32 dst[i] = acc[i] (n a multiple of 4)
  ;;
  ;; A window's maximum is its first in row-major order, as tfjs's cpu backend picks it: only a
  ;; strictly greater value replaces it, so NaN never is one, and a window of -Infinity and NaN
  ;; passes nothing on. Overlapping windows (AlexNet's 3/2) give an input several terms, summed in
  ;; f64 and rounded once by demote, as the cpu backend does; a single term rounds back to itself.
  ;; Four channels a turn in f32x4 lanes, each lane keeping its own maximum and its element index;
  ;; c must be a multiple of 4 (the caller takes other shapes). acc holds 8-byte slots, zeroed by
  ;; the caller; padding (padT, padL) only narrows the windows.
  (func $addAt (param $acc i32) (param $at i32) (param $g f32)
    (if (i32.ge_s (local.get $at) (i32.const 0))
      (then
        (local.set $at (i32.add (local.get $acc) (i32.shl (local.get $at) (i32.const 3))))
        (f64.store (local.get $at) (f64.add (f64.load (local.get $at)) (f64.promote_f32 (local.get $g)))))))

  (func (export "maxPoolGrad") (param $x i32) (param $dy i32) (param $acc i32)
      (param $batch i32) (param $inH i32) (param $inW i32) (param $c i32) (param $outH i32) (param $outW i32)
      (param $sH i32) (param $sW i32) (param $fH i32) (param $fW i32) (param $padT i32) (param $padL i32)
    (local $b i32) (local $oh i32) (local $ow i32) (local $ch i32) (local $o i32) (local $base i32)
    (local $h0 i32) (local $h1 i32) (local $w0 i32) (local $w1 i32) (local $h i32) (local $w i32) (local $i i32)
    (local $best v128) (local $at v128) (local $v v128) (local $gt v128) (local $lanes v128) (local $none v128) (local $low v128)
    (local $g i32)
    (local.set $lanes (v128.const i32x4 0 1 2 3))
    (local.set $none (i32x4.splat (i32.const -1)))
    (local.set $low (f32x4.splat (f32.const -inf)))
    (loop $batches
      (if (i32.lt_u (local.get $b) (local.get $batch)) (then
        (local.set $base (i32.mul (local.get $b) (i32.mul (local.get $inH) (i32.mul (local.get $inW) (local.get $c)))))
        (local.set $oh (i32.const 0))
        (loop $rows
          (if (i32.lt_u (local.get $oh) (local.get $outH)) (then
            (local.set $h0 (i32.sub (i32.mul (local.get $oh) (local.get $sH)) (local.get $padT)))
            (local.set $h1 (i32.add (local.get $h0) (local.get $fH)))
            (if (i32.lt_s (local.get $h0) (i32.const 0)) (then (local.set $h0 (i32.const 0))))
            (if (i32.gt_s (local.get $h1) (local.get $inH)) (then (local.set $h1 (local.get $inH))))
            (local.set $ow (i32.const 0))
            (loop $cols
              (if (i32.lt_u (local.get $ow) (local.get $outW)) (then
                (local.set $w0 (i32.sub (i32.mul (local.get $ow) (local.get $sW)) (local.get $padL)))
                (local.set $w1 (i32.add (local.get $w0) (local.get $fW)))
                (if (i32.lt_s (local.get $w0) (i32.const 0)) (then (local.set $w0 (i32.const 0))))
                (if (i32.gt_s (local.get $w1) (local.get $inW)) (then (local.set $w1 (local.get $inW))))
                (local.set $ch (i32.const 0))
                (loop $channels
                  (if (i32.lt_u (local.get $ch) (local.get $c)) (then
                    (local.set $best (local.get $low))
                    (local.set $at (local.get $none))
                    (local.set $h (local.get $h0))
                    (loop $wrows
                      (if (i32.lt_s (local.get $h) (local.get $h1)) (then
                        (local.set $i (i32.add (i32.add (local.get $base) (local.get $ch))
                          (i32.mul (i32.add (i32.mul (local.get $h) (local.get $inW)) (local.get $w0)) (local.get $c))))
                        (local.set $w (local.get $w0))
                        (loop $wcols
                          (if (i32.lt_s (local.get $w) (local.get $w1)) (then
                            (local.set $v (v128.load (i32.add (local.get $x) (i32.shl (local.get $i) (i32.const 2)))))
                            (local.set $gt (f32x4.gt (local.get $v) (local.get $best)))
                            (local.set $best (v128.bitselect (local.get $v) (local.get $best) (local.get $gt)))
                            (local.set $at (v128.bitselect (i32x4.add (i32x4.splat (local.get $i)) (local.get $lanes)) (local.get $at) (local.get $gt)))
                            (local.set $i (i32.add (local.get $i) (local.get $c)))
                            (local.set $w (i32.add (local.get $w) (i32.const 1)))
                            (br $wcols))))
                        (local.set $h (i32.add (local.get $h) (i32.const 1)))
                        (br $wrows))))
                    (local.set $g (i32.add (local.get $dy) (i32.shl (i32.add (local.get $o) (local.get $ch)) (i32.const 2))))
                    (call $addAt (local.get $acc) (i32x4.extract_lane 0 (local.get $at)) (f32.load offset=0 (local.get $g)))
                    (call $addAt (local.get $acc) (i32x4.extract_lane 1 (local.get $at)) (f32.load offset=4 (local.get $g)))
                    (call $addAt (local.get $acc) (i32x4.extract_lane 2 (local.get $at)) (f32.load offset=8 (local.get $g)))
                    (call $addAt (local.get $acc) (i32x4.extract_lane 3 (local.get $at)) (f32.load offset=12 (local.get $g)))
                    (local.set $ch (i32.add (local.get $ch) (i32.const 4)))
                    (br $channels))))
                (local.set $o (i32.add (local.get $o) (local.get $c)))
                (local.set $ow (i32.add (local.get $ow) (i32.const 1)))
                (br $cols))))
            (local.set $oh (i32.add (local.get $oh) (i32.const 1)))
            (br $rows))))
        (local.set $b (i32.add (local.get $b) (i32.const 1)))
        (br $batches)))))

  ;; Two f64x2 loads demoted into the halves of one f32x4 store.
  (func (export "demote") (param $acc i32) (param $dst i32) (param $n i32)
    (local $end i32)
    (local.set $end (i32.add (local.get $dst) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $dst) (local.get $end)))
        (v128.store (local.get $dst)
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
            (f32x4.demote_f64x2_zero (v128.load offset=0 (local.get $acc)))
            (f32x4.demote_f64x2_zero (v128.load offset=16 (local.get $acc)))))
        (local.set $acc (i32.add (local.get $acc) (i32.const 32)))
        (local.set $dst (i32.add (local.get $dst) (i32.const 16)))
        (br $next))))
)
