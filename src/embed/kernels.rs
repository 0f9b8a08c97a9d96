//! CPU kernels for the BERT forward pass, on plain slices: a linear layer on weights packed once
//! at load, fused attention, a fused residual add + layer norm, and the exact-erf GELU.
//!
//! Why they exist: at batch 1 a query is 16–64 tokens, so every linear layer is a skinny product
//! (m = tokens rows against 384×1152 … 1536×384 weights). gemm, candle's CPU matmul, re-packs the
//! weight matrix on every call (all 42.5 MB of encoder weights per query) and its thread
//! hand-offs cost more than the arithmetic at these sizes. Here weights are packed once into
//! panels of 32 output columns × k that the microkernel streams front to back; a tile of rows ×
//! 32 columns accumulates in registers with FMAs; bias and GELU are applied before the store;
//! panels are shared out between rayon threads. Attention runs each head as two products on the
//! same microkernel (its keys and values packed like weights), with the softmax between them
//! and padded keys left out; the residual add and layer norm are one pass.
//!
//! Vectorisation follows one pattern throughout: a portable loop marked `#[inline(always)]`,
//! instantiated behind `#[target_feature]` wrappers (AVX-512, AVX2+FMA) and chosen at run time
//! through [`Isa`]; the portable instance is the fallback for other CPUs and is tested directly.
//! The one exception is the matrix microkernel, written with intrinsics on x86 (see `x86`).

use std::ops::Range;

use rayon::prelude::*;

/// Output columns per packed weight panel.
const NR: usize = 32;
/// Below this many multiply-adds a linear layer runs on the calling thread: splitting it would
/// cost more in hand-offs than it saves.
const PAR_MIN_MACS: usize = 1 << 18;
/// Same for attention, counted as heads × queries × keys × head_dim.
const PAR_MIN_ATTN: usize = 1 << 16;

/// The instruction set the kernels run with. Only [`Isa::detect`] can pick a SIMD level, so a
/// value of this type is proof that the CPU supports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Isa(Level);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// The widest level this CPU supports.
    pub(crate) fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Isa(Level::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa(Level::Avx2);
            }
        }
        Isa(Level::Portable)
    }

    /// Every level this CPU supports, portable first, so tests cover each kernel it can run
    /// (on an AVX-512 machine, the AVX2 kernels too).
    #[cfg(test)]
    pub(crate) fn all_supported() -> Vec<Isa> {
        #[allow(unused_mut)]
        let mut levels = vec![Isa(Level::Portable)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                levels.push(Isa(Level::Avx2));
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                levels.push(Isa(Level::Avx512));
            }
        }
        levels
    }
}

/// Generates `$name(isa, args..)`, which runs the `#[inline(always)]` body `$body` compiled
/// for the instruction set `isa` names. `$body` takes the const parameters listed per level.
macro_rules! dispatch {
    (fn $name:ident($($arg:ident: $ty:ty),*) => $body:ident
        { avx512: [$($a5:tt),*], avx2: [$($a2:tt),*], portable: [$($p:tt),*] }) => {
        fn $name(isa: Isa, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) {
                    $body::<$($a5),*>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $body::<$($a2),*>($($arg),*)
                }
                match isa.0 {
                    // SAFETY: `Isa::detect` chose this level after checking the CPU has it.
                    Level::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    Level::Avx2 => return unsafe { avx2($($arg),*) },
                    Level::Portable => {}
                }
            }
            let _ = isa;
            $body::<$($p),*>($($arg),*)
        }
    };
}

/// Whether the portable instance may use `f32::mul_add`: only where it is one instruction
/// (elsewhere it is a slow library call).
const PORTABLE_FMA: bool = cfg!(any(target_arch = "aarch64", target_feature = "fma"));

/// `a * b + c`, fused when `FMA`.
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// A row-major output matrix (`stride` floats from one row to the next) shared by the threads
/// of one parallel section, each writing a disjoint part of it.
#[derive(Clone, Copy)]
struct SharedOut {
    ptr: *mut f32,
    stride: usize,
}
// SAFETY: only used while the buffer is exclusively borrowed by the caller, and every thread
// writes elements no other thread touches (documented at each use).
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The same rows, starting `offset` floats further on.
    ///
    /// # Safety
    /// `offset` stays inside the buffer.
    unsafe fn offset(self, offset: usize) -> SharedOut {
        SharedOut {
            // SAFETY: by the caller's contract.
            ptr: unsafe { self.ptr.add(offset) },
            stride: self.stride,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Linear layer

/// One cache line of packed weights; a `Vec` of these is 64-byte aligned.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// Activation applied to a linear layer's output before it is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Act {
    Identity,
    /// GELU with erf, as BERT's `gelu`.
    GeluErf,
    Relu,
}

/// A linear layer `y = x·Wᵀ + b`, its weights laid out for [`linear`]: panels of [`NR`] output
/// columns, each `[k][NR]` row-major, so the kernel reads every panel as one forward stream.
/// The last panel is padded with zero columns.
pub(crate) struct PackedLinear {
    k: usize,
    n: usize,
    data: Vec<Line>,
    /// `n` rounded up to whole panels, zero-padded.
    bias: Vec<f32>,
}

impl PackedLinear {
    /// From a weight in PyTorch's `[out = n][in = k]` layout and its bias.
    pub(crate) fn new(weight: &[f32], bias: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(weight.len(), n * k, "weight is not {n}×{k}");
        assert_eq!(bias.len(), n, "bias is not {n} long");
        let mut packed = Self::from_fn(n, k, |o, kk| weight[o * k + kk]);
        packed.bias[..n].copy_from_slice(bias);
        packed
    }

    /// Weight `(out, in) -> w(out, in)`, no bias.
    #[inline(always)]
    fn from_fn(n: usize, k: usize, w: impl Fn(usize, usize) -> f32) -> Self {
        let panels = n.div_ceil(NR);
        let mut data = vec![Line([0.0; 16]); panels * k * NR / 16];
        let flat = lines_mut(&mut data);
        for o in 0..n {
            let (p, j) = (o / NR, o % NR);
            let panel = &mut flat[p * k * NR..(p + 1) * k * NR];
            for kk in 0..k {
                panel[kk * NR + j] = w(o, kk);
            }
        }
        PackedLinear {
            k,
            n,
            data,
            bias: vec![0.0; panels * NR],
        }
    }

    pub(crate) fn in_features(&self) -> usize {
        self.k
    }

    pub(crate) fn out_features(&self) -> usize {
        self.n
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    fn panel(&self, p: usize) -> &[f32] {
        &lines(&self.data)[p * self.k * NR..(p + 1) * self.k * NR]
    }
}

fn lines(data: &[Line]) -> &[f32] {
    // SAFETY: `Line` is `repr(C)` around `[f32; 16]` and exactly 64 bytes (no padding).
    unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<f32>(), data.len() * 16) }
}

fn lines_mut(data: &mut [Line]) -> &mut [f32] {
    // SAFETY: as in `lines`, and the borrow is exclusive.
    unsafe { std::slice::from_raw_parts_mut(data.as_mut_ptr().cast::<f32>(), data.len() * 16) }
}

/// `out[m][n] = act(x[m][k] · Wᵀ + b)`, with the work split over rayon's current pool.
pub(crate) fn linear(isa: Isa, x: &[f32], m: usize, w: &PackedLinear, act: Act, out: &mut [f32]) {
    assert_eq!(x.len(), m * w.k, "input is not {m}×{}", w.k);
    assert_eq!(out.len(), m * w.n, "output is not {m}×{}", w.n);
    let panels = w.panels();
    let x = Lhs {
        data: x,
        rows: m,
        stride: w.k,
    };
    let dst = SharedOut {
        ptr: out.as_mut_ptr(),
        stride: w.n,
    };
    let threads = rayon::current_num_threads();
    if threads <= 1 || panels < 2 || m * w.k * w.n < PAR_MIN_MACS {
        return linear_panels(isa, x, w, act, 0..panels, dst);
    }
    // A few chunks per thread, so a thread slowed by other load hands the rest to the others.
    let per_chunk = panels.div_ceil((threads * 4).min(panels));
    (0..panels.div_ceil(per_chunk))
        .into_par_iter()
        .for_each(|c| {
            let range = c * per_chunk..((c + 1) * per_chunk).min(panels);
            linear_panels(isa, x, w, act, range, dst)
        });
}

dispatch! {
    fn linear_panels(x: Lhs<'_>, w: &PackedLinear, act: Act, panels: Range<usize>, dst: SharedOut)
        => linear_body {
            avx512: [8, 32, TILE_AVX512],
            avx2: [6, 16, TILE_AVX2],
            portable: [4, 16, TILE_PORTABLE]
        }
}

/// The left operand of a product: `rows` rows of `k` floats, `stride` apart.
#[derive(Clone, Copy)]
struct Lhs<'a> {
    data: &'a [f32],
    rows: usize,
    stride: usize,
}

/// Which microkernel computes a register tile (see [`tile`]).
const TILE_PORTABLE: u8 = 0;
const TILE_AVX2: u8 = 1;
const TILE_AVX512: u8 = 2;

/// Computes output columns `panels × NR` for all rows. Register tiles are `MR` rows × `CW`
/// columns (`CW` divides `NR`), sized to each instruction set's register file.
#[inline(always)]
fn linear_body<const MR: usize, const CW: usize, const TILE: u8>(
    x: Lhs<'_>,
    w: &PackedLinear,
    act: Act,
    panels: Range<usize>,
    dst: SharedOut,
) {
    let (k, m, ldx) = (w.k, x.rows, x.stride);
    assert!(m == 0 || x.data.len() >= (m - 1) * ldx + k);
    for p in panels {
        let panel = w.panel(p);
        for c0 in (0..NR).step_by(CW) {
            let col = p * NR + c0;
            if col >= w.n {
                break;
            }
            let cols = (w.n - col).min(CW);
            let bias: &[f32; CW] = w.bias[col..col + CW].try_into().unwrap();
            let mut r = 0;
            while r + MR <= m {
                let acc = tile::<MR, CW, TILE>(&x.data[r * ldx..], ldx, k, panel, c0);
                // SAFETY: this call owns output columns `col..col + cols` of every row.
                unsafe { store(&acc, bias, act, dst, r, col, cols) };
                r += MR;
            }
            let rest = &x.data[(r * ldx).min(x.data.len())..];
            // SAFETY (each arm): as above.
            unsafe {
                macro_rules! tail {
                    ($($rows:literal)*) => {
                        match m - r {
                            0 => {}
                            $($rows => store(
                                &tile::<$rows, CW, TILE>(rest, ldx, k, panel, c0),
                                bias, act, dst, r, col, cols,
                            ),)*
                            _ => unreachable!("tiles have at most 8 rows"),
                        }
                    };
                }
                tail!(1 2 3 4 5 6 7);
            }
        }
    }
}

/// `ROWS` rows of `x` (`k` long, `ldx` apart) times columns `c0..c0 + CW` of a panel, by the
/// microkernel `TILE` names. Only called from code compiled for that microkernel's instruction
/// set (the `dispatch!` wrappers).
#[inline(always)]
fn tile<const ROWS: usize, const CW: usize, const TILE: u8>(
    x: &[f32],
    ldx: usize,
    k: usize,
    panel: &[f32],
    c0: usize,
) -> [[f32; CW]; ROWS] {
    assert!(x.len() >= (ROWS - 1) * ldx + k && panel.len() == k * NR && c0 + CW <= NR);
    #[cfg(target_arch = "x86_64")]
    match TILE {
        // SAFETY: bounds checked just above; the instruction set is the caller's (see above).
        TILE_AVX512 => {
            return unsafe { x86::tile_avx512::<ROWS, CW>(x.as_ptr(), ldx, k, panel.as_ptr()) }
        }
        // SAFETY: as above.
        TILE_AVX2 => {
            return unsafe {
                x86::tile_avx2::<ROWS, CW>(x.as_ptr(), ldx, k, panel.as_ptr().add(c0))
            }
        }
        _ => {}
    }
    tile_portable::<ROWS, CW, PORTABLE_FMA>(x, ldx, k, panel, c0)
}

/// The portable microkernel: plain loops the compiler vectorises as it can.
#[inline(always)]
fn tile_portable<const ROWS: usize, const CW: usize, const FMA: bool>(
    x: &[f32],
    ldx: usize,
    k: usize,
    panel: &[f32],
    c0: usize,
) -> [[f32; CW]; ROWS] {
    let rows: [&[f32]; ROWS] = std::array::from_fn(|r| &x[r * ldx..r * ldx + k]);
    let mut acc = [[0.0f32; CW]; ROWS];
    for (kk, line) in panel.chunks_exact(NR).enumerate() {
        let wv: &[f32; CW] = line[c0..c0 + CW].try_into().unwrap();
        for r in 0..ROWS {
            let a = rows[r][kk];
            for j in 0..CW {
                acc[r][j] = madd::<FMA>(a, wv[j], acc[r][j]);
            }
        }
    }
    acc
}

/// The x86 microkernels, written with intrinsics: the portable loop, compiled for AVX-512,
/// kept its accumulators on the stack (LLVM did not promote the 2-D array to registers), which
/// made it store-bound.
///
/// The AVX-512 intrinsics are stable since Rust 1.89, like the `avx512f` target feature the
/// crate already enables in `index` and here, so they raise no requirement that was not there.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::incompatible_msrv)]
mod x86 {
    use std::arch::x86_64::*;

    use super::NR;

    /// 8×32 at most: 16 accumulators of the 32 zmm registers, two panel loads and one broadcast
    /// per 16 FMAs.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `x` points to `ROWS` rows of `k` floats, `ldx` apart; `panel` to
    /// `k × NR`, 64-byte aligned.
    #[inline(always)]
    pub(super) unsafe fn tile_avx512<const ROWS: usize, const CW: usize>(
        x: *const f32,
        ldx: usize,
        k: usize,
        panel: *const f32,
    ) -> [[f32; CW]; ROWS] {
        assert!(CW == 32 && NR == 32);
        let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
        for kk in 0..k {
            let w = panel.add(kk * NR);
            let (w0, w1) = (_mm512_load_ps(w), _mm512_load_ps(w.add(16)));
            for (r, acc) in acc.iter_mut().enumerate() {
                let a = _mm512_set1_ps(*x.add(r * ldx + kk));
                acc[0] = _mm512_fmadd_ps(a, w0, acc[0]);
                acc[1] = _mm512_fmadd_ps(a, w1, acc[1]);
            }
        }
        let mut out = [[0.0f32; CW]; ROWS];
        for (o, acc) in out.iter_mut().zip(&acc) {
            _mm512_storeu_ps(o.as_mut_ptr(), acc[0]);
            _mm512_storeu_ps(o.as_mut_ptr().add(16), acc[1]);
        }
        out
    }

    /// 6×16 at most: 12 accumulators of the 16 ymm registers.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `x` points to `ROWS` rows of `k` floats, `ldx` apart; `panel`
    /// to the first of `k` lines of 16 floats, `NR` apart.
    #[inline(always)]
    pub(super) unsafe fn tile_avx2<const ROWS: usize, const CW: usize>(
        x: *const f32,
        ldx: usize,
        k: usize,
        panel: *const f32,
    ) -> [[f32; CW]; ROWS] {
        assert!(CW == 16);
        let mut acc = [[_mm256_setzero_ps(); 2]; ROWS];
        for kk in 0..k {
            let w = panel.add(kk * NR);
            let (w0, w1) = (_mm256_loadu_ps(w), _mm256_loadu_ps(w.add(8)));
            for (r, acc) in acc.iter_mut().enumerate() {
                let a = _mm256_set1_ps(*x.add(r * ldx + kk));
                acc[0] = _mm256_fmadd_ps(a, w0, acc[0]);
                acc[1] = _mm256_fmadd_ps(a, w1, acc[1]);
            }
        }
        let mut out = [[0.0f32; CW]; ROWS];
        for (o, acc) in out.iter_mut().zip(&acc) {
            _mm256_storeu_ps(o.as_mut_ptr(), acc[0]);
            _mm256_storeu_ps(o.as_mut_ptr().add(8), acc[1]);
        }
        out
    }
}

/// Adds the bias, applies the activation and writes the first `cols` columns of each row.
///
/// # Safety
/// `dst` has at least `r0 + ROWS` rows of at least `col + cols` columns, and no other thread
/// writes columns `col..col + cols` of those rows meanwhile.
#[inline(always)]
unsafe fn store<const ROWS: usize, const CW: usize>(
    acc: &[[f32; CW]; ROWS],
    bias: &[f32; CW],
    act: Act,
    dst: SharedOut,
    r0: usize,
    col: usize,
    cols: usize,
) {
    for (r, row) in acc.iter().enumerate() {
        // SAFETY: in bounds and unshared, by the caller's contract.
        let out = unsafe {
            std::slice::from_raw_parts_mut(dst.ptr.add((r0 + r) * dst.stride + col), cols)
        };
        for ((o, &a), &b) in out.iter_mut().zip(row).zip(bias) {
            *o = a + b;
        }
        match act {
            Act::Identity => {}
            Act::GeluErf => out.iter_mut().for_each(|v| *v = gelu(*v)),
            Act::Relu => out.iter_mut().for_each(|v| *v = v.max(0.0)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Attention

/// Multi-head self-attention over a fused projection `qkv` of `b` sequences × `l` positions ×
/// `[q | k | v]` (each `heads × head_dim`, queries already scaled by 1/√head_dim), writing the
/// context `[b·l][heads × head_dim]`. Keys at positions `>= lens[s]` of sequence `s` are
/// padding and get no weight, exactly like an additive mask of a large negative number.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    isa: Isa,
    qkv: &[f32],
    b: usize,
    l: usize,
    heads: usize,
    head_dim: usize,
    lens: &[usize],
    out: &mut [f32],
) {
    let h = heads * head_dim;
    assert_eq!(qkv.len(), b * l * 3 * h, "qkv is not {b}×{l}×3·{h}");
    assert_eq!(out.len(), b * l * h, "context is not {b}×{l}×{h}");
    assert_eq!(lens.len(), b);
    assert!(
        lens.iter().all(|&n| (1..=l).contains(&n)),
        "lengths out of range"
    );
    let shape = AttnShape { l, heads, head_dim };
    let out = SharedOut {
        ptr: out.as_mut_ptr(),
        stride: h,
    };
    let unit = |u: usize| {
        let (s, head) = (u / heads, u % heads);
        let seq = &qkv[s * l * 3 * h..(s + 1) * l * 3 * h];
        // SAFETY: in bounds (row s·l, column head·head_dim); one unit per (sequence, head)
        // writes that head's columns of the sequence's rows, and nothing else.
        let dst = unsafe { out.offset(s * l * h + head * head_dim) };
        attention_head(isa, seq, shape, head, lens[s], dst);
    };
    if rayon::current_num_threads() > 1 && b * heads * l * l * head_dim >= PAR_MIN_ATTN {
        (0..b * heads).into_par_iter().for_each(unit);
    } else {
        (0..b * heads).for_each(unit);
    }
}

#[derive(Clone, Copy)]
struct AttnShape {
    l: usize,
    heads: usize,
    head_dim: usize,
}

dispatch! {
    fn attention_head(seq: &[f32], shape: AttnShape, head: usize, len: usize, dst: SharedOut)
        => attention_head_body {
            avx512: [8, 32, TILE_AVX512],
            avx2: [6, 16, TILE_AVX2],
            portable: [4, 16, TILE_PORTABLE]
        }
}

/// One head of one sequence, as two products on the linear layer's microkernel: scores =
/// queries · keysᵀ (keys packed as a layer of `len` outputs), a softmax per row, then context =
/// probabilities · values (values packed as a layer of `head_dim` outputs). Writes `l` rows of
/// `head_dim` to `dst`.
#[inline(always)]
fn attention_head_body<const MR: usize, const CW: usize, const TILE: u8>(
    seq: &[f32],
    shape: AttnShape,
    head: usize,
    len: usize,
    dst: SharedOut,
) {
    let AttnShape {
        l,
        heads,
        head_dim: hd,
    } = shape;
    let h = heads * hd;
    let stride = 3 * h;
    let (q_off, k_off, v_off) = (head * hd, h + head * hd, 2 * h + head * hd);
    let keys = PackedLinear::from_fn(len, hd, |j, d| seq[j * stride + k_off + d]);
    let values = PackedLinear::from_fn(hd, len, |d, j| seq[j * stride + v_off + d]);
    let mut probs = vec![0.0f32; l * len];
    let queries = Lhs {
        data: &seq[q_off..],
        rows: l,
        stride,
    };
    let scores = SharedOut {
        ptr: probs.as_mut_ptr(),
        stride: len,
    };
    linear_body::<MR, CW, TILE>(queries, &keys, Act::Identity, 0..keys.panels(), scores);
    for row in probs.chunks_exact_mut(len) {
        let max = max_of(row);
        for s in row.iter_mut() {
            *s = exp_neg(max - *s);
        }
        let inv = 1.0 / sum_of(row);
        for s in row.iter_mut() {
            *s *= inv;
        }
    }
    let probs = Lhs {
        data: &probs,
        rows: l,
        stride: len,
    };
    linear_body::<MR, CW, TILE>(probs, &values, Act::Identity, 0..values.panels(), dst);
}

/// Sixteen lanes, so the compiler can keep the running sum in one vector register (it will not
/// reorder a single float sum).
#[inline(always)]
fn sum_of(v: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = v.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

#[inline(always)]
fn max_of(v: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let chunks = v.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            acc[i] = acc[i].max(c[i]);
        }
    }
    acc.iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b))
}

// ---------------------------------------------------------------------------------------------
// Residual add + layer norm

/// `out = layer_norm(x + residual) · gamma + beta` over rows of `gamma.len()`.
pub(crate) fn add_layer_norm(
    isa: Isa,
    x: &[f32],
    residual: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
) {
    let n = gamma.len();
    assert!(n > 0 && beta.len() == n && x.len().is_multiple_of(n));
    assert!(residual.len() == x.len() && out.len() == x.len());
    let p = NormParams { gamma, beta, eps };
    // Rows are independent; split only when there are enough to pay for the hand-off.
    const ROWS_PER_TASK: usize = 32;
    if rayon::current_num_threads() > 1 && x.len() / n > 2 * ROWS_PER_TASK {
        let chunk = ROWS_PER_TASK * n;
        out.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk).zip(residual.par_chunks(chunk)))
            .for_each(|(o, (x, r))| add_norm_rows(isa, x, r, p, o));
    } else {
        add_norm_rows(isa, x, residual, p, out);
    }
}

#[derive(Clone, Copy)]
struct NormParams<'a> {
    gamma: &'a [f32],
    beta: &'a [f32],
    eps: f32,
}

dispatch! {
    fn add_norm_rows(x: &[f32], residual: &[f32], p: NormParams<'_>, out: &mut [f32])
        => add_norm_rows_body { avx512: [], avx2: [], portable: [] }
}

#[inline(always)]
fn add_norm_rows_body(x: &[f32], residual: &[f32], p: NormParams<'_>, out: &mut [f32]) {
    let n = p.gamma.len();
    for ((o, x), r) in out
        .chunks_exact_mut(n)
        .zip(x.chunks_exact(n))
        .zip(residual.chunks_exact(n))
    {
        for ((o, &x), &r) in o.iter_mut().zip(x).zip(r) {
            *o = x + r;
        }
        let mean = sum_of(o) / n as f32;
        let mut sq = [0.0f32; 16];
        let chunks = o.chunks_exact(16);
        let rest: f32 = chunks
            .remainder()
            .iter()
            .map(|v| (v - mean) * (v - mean))
            .sum();
        for c in chunks {
            for i in 0..16 {
                sq[i] += (c[i] - mean) * (c[i] - mean);
            }
        }
        let var = (sq.iter().sum::<f32>() + rest) / n as f32;
        let inv_std = 1.0 / (var + p.eps).sqrt();
        for ((o, &g), &b) in o.iter_mut().zip(p.gamma).zip(p.beta) {
            *o = (*o - mean) * inv_std * g + b;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// GELU and the exponential it and softmax share

/// GELU over a slice (candle's own `gelu_erf` calls a scalar `erff` per element).
pub(crate) fn gelu_slice(isa: Isa, src: &[f32], out: &mut [f32]) {
    assert_eq!(src.len(), out.len());
    gelu_slice_any(isa, src, out)
}

dispatch! {
    fn gelu_slice_any(src: &[f32], out: &mut [f32])
        => gelu_slice_body { avx512: [], avx2: [], portable: [] }
}

#[inline(always)]
fn gelu_slice_body(src: &[f32], out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(src) {
        *o = gelu(x);
    }
}

/// GELU with the exact (erf) formulation, to ~1e-7 absolute error; vectorises when inlined
/// into a loop.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp_neg(a * a);
    y.copysign(x)
}

/// e^(-z) for z >= 0, via 2^(-z·log2 e) = 2^n · 2^f with a degree-7 series for 2^f
/// (relative error ~1e-8 + 6e-8·z, from rounding z·log2 e to f32); below 2^-126 it stays at
/// about 1e-38 rather than reaching 0.
#[inline(always)]
fn exp_neg(z: f32) -> f32 {
    // max/min (not clamp) also map NaN to -126, so `n` below is always a finite integer in
    // [-126, 126].
    #[allow(clippy::manual_clamp)]
    let v = (-z * std::f32::consts::LOG2_E).max(-126.0).min(126.0);
    let n = v.round();
    let y = (v - n) * std::f32::consts::LN_2; // |y| <= 0.347
    let p = 1.0
        + y * (1.0
            + y * (0.5
                + y * (1.0 / 6.0
                    + y * (1.0 / 24.0
                        + y * (1.0 / 120.0 + y * (1.0 / 720.0 + y * (1.0 / 5040.0)))))));
    // SAFETY: `n` is a finite integer in [-126, 126] (see above), so it fits an i32; the
    // unchecked conversion vectorises where `as` (which saturates) does not.
    let n = unsafe { n.to_int_unchecked::<i32>() };
    let scale = f32::from_bits(((n + 127) as u32) << 23);
    p * scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn random(rng: &mut StdRng, len: usize) -> Vec<f32> {
        (0..len).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
    }

    /// The portable kernels, and each SIMD level this CPU has.
    fn isas() -> Vec<Isa> {
        Isa::all_supported()
    }

    /// Runs `f` on a rayon pool of `threads`, so the parallel paths split unevenly too.
    fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(f)
    }

    #[test]
    fn linear_matches_candle_matmul() {
        let mut rng = StdRng::seed_from_u64(1);
        // (m, k, n): edge rows (1, tails of every tile height), n not a multiple of 16 or of
        // a panel, and MiniLM's own shapes (k = 384 and 1536), some big enough to run parallel.
        let shapes = [
            (1, 384, 384),
            (1, 1536, 17),
            (2, 7, 1),
            (5, 384, 1152),
            (7, 33, 45),
            (9, 1536, 384),
            (16, 384, 1536),
            (17, 384, 50),
            (64, 1536, 384),
            (75, 384, 100),
        ];
        let cpu = Device::Cpu;
        for (m, k, n) in shapes {
            let x = random(&mut rng, m * k);
            let w = random(&mut rng, n * k);
            let b = random(&mut rng, n);
            let xt = Tensor::from_vec(x.clone(), (m, k), &cpu).unwrap();
            let wt = Tensor::from_vec(w.clone(), (n, k), &cpu).unwrap();
            let bt = Tensor::from_vec(b.clone(), n, &cpu).unwrap();
            let lin = xt
                .matmul(&wt.t().unwrap())
                .unwrap()
                .broadcast_add(&bt)
                .unwrap();
            let want: Vec<f32> = lin.flatten_all().unwrap().to_vec1().unwrap();
            let want_gelu: Vec<f32> = lin
                .gelu_erf()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            // Worst-case rounding of a k-term dot product scales with the sum of |terms|.
            let scale: Vec<f32> = (0..m * n)
                .map(|i| {
                    let (r, c) = (i / n, i % n);
                    (0..k)
                        .map(|j| (x[r * k + j] * w[c * k + j]).abs())
                        .sum::<f32>()
                        + b[c].abs()
                })
                .collect();
            let packed = PackedLinear::new(&w, &b, n, k);
            for isa in isas() {
                for threads in [1, 2, 3] {
                    for (act, want) in [(Act::Identity, &want), (Act::GeluErf, &want_gelu)] {
                        let mut out = vec![f32::NAN; m * n];
                        on_threads(threads, || linear(isa, &x, m, &packed, act, &mut out));
                        for (i, (&got, &exp)) in out.iter().zip(want.iter()).enumerate() {
                            let tol = 1e-6 * scale[i] + 1e-6;
                            assert!(
                                (got - exp).abs() <= tol,
                                "{isa:?} {threads} threads {act:?} m={m} k={k} n={n} at {i}: \
                                 {got} vs {exp}"
                            );
                        }
                    }
                    let mut out = vec![f32::NAN; m * n];
                    on_threads(threads, || linear(isa, &x, m, &packed, Act::Relu, &mut out));
                    for (i, (&got, &exp)) in out.iter().zip(&want).enumerate() {
                        assert!((got - exp.max(0.0)).abs() <= 1e-6 * scale[i] + 1e-6);
                    }
                }
            }
        }
    }

    /// Attention in f64, one (sequence, head) at a time, with the additive mask BERT uses.
    #[allow(clippy::too_many_arguments)]
    fn attention_reference(
        qkv: &[f32],
        b: usize,
        l: usize,
        heads: usize,
        hd: usize,
        lens: &[usize],
    ) -> Vec<f32> {
        let h = heads * hd;
        let at = |s: usize, t: usize, c: usize| qkv[(s * l + t) * 3 * h + c] as f64;
        let mut out = vec![0.0f32; b * l * h];
        for s in 0..b {
            for head in 0..heads {
                for i in 0..l {
                    let scores: Vec<f64> = (0..l)
                        .map(|j| {
                            let dot: f64 = (0..hd)
                                .map(|d| at(s, i, head * hd + d) * at(s, j, h + head * hd + d))
                                .sum();
                            dot + if j < lens[s] { 0.0 } else { -1e4 }
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for d in 0..hd {
                        let v: f64 = (0..l)
                            .map(|j| e[j] / sum * at(s, j, 2 * h + head * hd + d))
                            .sum();
                        out[(s * l + i) * h + head * hd + d] = v as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn attention_matches_reference_with_padding() {
        let mut rng = StdRng::seed_from_u64(2);
        // (b, l, heads, head_dim, lengths): odd sizes, a single token, and MiniLM's shape.
        let cases: [(usize, usize, usize, usize, Vec<usize>); 4] = [
            (1, 1, 1, 3, vec![1]),
            (3, 7, 2, 5, vec![7, 1, 4]),
            (2, 19, 3, 17, vec![12, 19]),
            (4, 40, 12, 32, vec![40, 33, 2, 17]),
        ];
        for (b, l, heads, hd, lens) in cases {
            let qkv: Vec<f32> = random(&mut rng, b * l * 3 * heads * hd)
                .into_iter()
                .map(|v| 2.0 * v)
                .collect();
            let want = attention_reference(&qkv, b, l, heads, hd, &lens);
            for isa in isas() {
                for threads in [1, 2] {
                    let mut out = vec![f32::NAN; b * l * heads * hd];
                    on_threads(threads, || {
                        attention(isa, &qkv, b, l, heads, hd, &lens, &mut out)
                    });
                    for (i, (g, w)) in out.iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() < 1e-5,
                            "{isa:?} b={b} l={l} heads={heads} hd={hd} at {i}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn add_layer_norm_matches_candle() {
        let mut rng = StdRng::seed_from_u64(3);
        let cpu = Device::Cpu;
        for (rows, n) in [(1, 384), (3, 17), (100, 384), (70, 5)] {
            let x = random(&mut rng, rows * n);
            let r = random(&mut rng, rows * n);
            let g: Vec<f32> = random(&mut rng, n).iter().map(|v| 1.0 + v).collect();
            let b = random(&mut rng, n);
            let t = |v: &[f32], shape: &[usize]| Tensor::from_vec(v.to_vec(), shape, &cpu).unwrap();
            let sum = (t(&x, &[rows, n]) + t(&r, &[rows, n])).unwrap();
            let want: Vec<f32> =
                candle_nn::ops::layer_norm(&sum, &t(&g, &[n]), &t(&b, &[n]), 1e-12)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
            for isa in isas() {
                let mut out = vec![f32::NAN; rows * n];
                on_threads(2, || add_layer_norm(isa, &x, &r, &g, &b, 1e-12, &mut out));
                for (got, exp) in out.iter().zip(&want) {
                    assert!(
                        (got - exp).abs() < 1e-4,
                        "{isa:?} {rows}×{n}: {got} vs {exp}"
                    );
                }
            }
        }
    }

    fn erf_f64(x: f64) -> f64 {
        // Reference: the Maclaurin series in f64 is accurate to ~1e-8 up to |x| = 4.5 (its
        // largest term is ~1e8); beyond, erfc(x) < 2e-10, so erf is its sign.
        if x.abs() > 4.5 {
            return x.signum();
        }
        let mut sum: f64 = 0.0;
        let mut term = x;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs().max(1e-300) || n < 5.0 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
            if n > 400.0 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn gelu_matches_exact_gelu() {
        let xs: Vec<f32> = (-4000..=4000)
            .map(|i| i as f32 * 0.002)
            .chain([-30.0, 30.0, 0.0])
            .collect();
        for isa in isas() {
            let mut out = vec![0.0; xs.len()];
            gelu_slice(isa, &xs, &mut out);
            for (&x, &g) in xs.iter().zip(&out) {
                let xd = x as f64;
                let exact = 0.5 * xd * (1.0 + erf_f64(xd / std::f64::consts::SQRT_2));
                assert!(
                    (g as f64 - exact).abs() < 2e-6 * xd.abs().max(1.0),
                    "{isa:?} x={x}: {g} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn exp_neg_is_accurate_and_total() {
        for i in 0..=2000 {
            let z = i as f32 * 0.05;
            let want = (-(z as f64)).exp();
            let got = exp_neg(z) as f64;
            // Rounding -z·log2(e) to f32 costs ~6e-8·z relative; the polynomial ~1e-8.
            let tol = 1e-7 * (1.0 + z as f64) * want + 2e-38;
            assert!((got - want).abs() <= tol, "z={z}: {got} vs {want}");
        }
        assert!(exp_neg(f32::INFINITY) < 1e-37);
        assert!(exp_neg(f32::NAN).is_finite());
    }
}
