//! candle custom ops over the CPU kernels of `kernels.rs`, so the BERT forward stays a sequence
//! of tensor operations while its heavy steps run our code on the CPU: the packed linear layer
//! (bias and activation fused), fused attention, residual add + layer norm, and an exact-erf
//! GELU (candle's calls a scalar `erff` per element, ~10% of a MiniLM forward pass here).
//! These ops are CPU-only; on GPUs the forward uses candle's own operations.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::kernels::{self, Act, Isa, PackedLinear};

/// GELU with the exact (erf) formulation, to ~1e-7 absolute error.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        x.apply_op1_no_bwd(&FastGeluErf)
    } else {
        x.gelu_erf()
    }
}

/// The contiguous f32 data of a CPU tensor.
fn contiguous<'a>(op: &str, storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op} needs a contiguous input"),
    }
}

struct FastGeluErf;

impl CustomOp1 for FastGeluErf {
    fn name(&self) -> &'static str {
        "fast-gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = contiguous(self.name(), storage, layout)?;
        let isa = Isa::detect();
        let mut out = vec![0f32; src.len()];
        const CHUNK: usize = 16 * 1024;
        if src.len() > 2 * CHUNK {
            out.par_chunks_mut(CHUNK)
                .zip(src.par_chunks(CHUNK))
                .for_each(|(o, i)| kernels::gelu_slice(isa, i, o));
        } else {
            kernels::gelu_slice(isa, src, &mut out);
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// `act(x · Wᵀ + b)` over the last dimension of `x`, with packed weights.
pub(crate) struct Linear<'a> {
    pub weights: &'a PackedLinear,
    pub act: Act,
    pub isa: Isa,
}

impl CustomOp1 for Linear<'_> {
    fn name(&self) -> &'static str {
        "packed-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(self.name(), storage, layout)?;
        let (k, n) = (self.weights.in_features(), self.weights.out_features());
        let mut dims = layout.shape().dims().to_vec();
        match dims.last_mut() {
            Some(last) if *last == k => *last = n,
            _ => candle_core::bail!("packed-linear: input {:?} does not end in {k}", dims),
        }
        let m = x.len() / k;
        let mut out = vec![0f32; m * n];
        kernels::linear(self.isa, x, m, self.weights, self.act, &mut out);
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

/// Self-attention over a fused `[b, l, 3·hidden]` projection, giving `[b, l, hidden]`;
/// `lens[s]` tokens of sequence `s` are real, the rest padding.
pub(crate) struct Attention<'a> {
    pub heads: usize,
    pub lens: &'a [usize],
    pub isa: Isa,
}

impl CustomOp1 for Attention<'_> {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = contiguous(self.name(), storage, layout)?;
        let (b, l, three_h) = layout.shape().dims3()?;
        let h = three_h / 3;
        if three_h % 3 != 0 || h % self.heads != 0 || self.lens.len() != b {
            candle_core::bail!("fused-attention: bad shape {:?}", layout.shape());
        }
        let mut out = vec![0f32; b * l * h];
        kernels::attention(
            self.isa,
            qkv,
            b,
            l,
            self.heads,
            h / self.heads,
            self.lens,
            &mut out,
        );
        Ok((CpuStorage::F32(out), Shape::from((b, l, h))))
    }
}

/// `layer_norm(x + residual)` over the last dimension.
pub(crate) struct AddLayerNorm<'a> {
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    pub eps: f32,
    pub isa: Isa,
}

impl CustomOp2 for AddLayerNorm<'_> {
    fn name(&self) -> &'static str {
        "add-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(self.name(), s1, l1)?;
        let residual = contiguous(self.name(), s2, l2)?;
        if l1.shape() != l2.shape() || l1.shape().dims().last() != Some(&self.gamma.len()) {
            candle_core::bail!(
                "add-layer-norm: shapes {:?} and {:?} for {} features",
                l1.shape(),
                l2.shape(),
                self.gamma.len()
            );
        }
        let mut out = vec![0f32; x.len()];
        kernels::add_layer_norm(
            self.isa, x, residual, self.gamma, self.beta, self.eps, &mut out,
        );
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_op_matches_candle() {
        let x = Tensor::arange(-300f32, 300., &candle_core::Device::Cpu).unwrap();
        let x = (x * 0.01).unwrap();
        let ours = gelu_erf(&x).unwrap().to_vec1::<f32>().unwrap();
        let theirs = x.gelu_erf().unwrap().to_vec1::<f32>().unwrap();
        for (a, b) in ours.iter().zip(&theirs) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}
