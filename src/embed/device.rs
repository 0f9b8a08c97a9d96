//! Device choice, in one function: `auto` tries CUDA, then Metal, then the CPU, and a request
//! for a backend this binary lacks says which `--features` to rebuild with.

use candle_core::Device;

use crate::error::{Error, Result};

/// Parses `auto | cpu | cuda | cuda:N | metal | metal:N` into a candle device.
pub fn select_device(spec: &str) -> Result<Device> {
    let spec = spec.trim().to_ascii_lowercase();
    let (kind, ordinal) = match spec.split_once(':') {
        Some((k, n)) => {
            let n: usize = n
                .parse()
                .map_err(|_| Error::Device(format!("bad device ordinal in `{spec}`")))?;
            (k.to_string(), n)
        }
        None => (spec.clone(), 0),
    };
    match kind.as_str() {
        "auto" => Ok(auto()),
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(ordinal),
        "metal" => metal(ordinal),
        _ => Err(Error::Device(format!(
            "unknown device `{spec}`: use auto, cpu, cuda, cuda:N, metal or metal:N"
        ))),
    }
}

/// A short name for a device: `cpu`, `cuda:0`, `metal:0`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

fn auto() -> Device {
    if cfg!(feature = "cuda") && candle_core::utils::cuda_is_available() {
        match Device::new_cuda(0) {
            Ok(d) => return d,
            Err(e) => tracing::warn!("CUDA is compiled in but unusable ({e}); trying others"),
        }
    }
    if cfg!(feature = "metal") && candle_core::utils::metal_is_available() {
        match Device::new_metal(0) {
            Ok(d) => return d,
            Err(e) => tracing::warn!("Metal is compiled in but unusable ({e}); using the CPU"),
        }
    }
    if !cfg!(feature = "cuda") && !cfg!(feature = "metal") {
        tracing::debug!(
            "built without GPU support: rebuild with `--features cuda` or `--features metal` to use one"
        );
    }
    Device::Cpu
}

fn cuda(ordinal: usize) -> Result<Device> {
    if !cfg!(feature = "cuda") {
        return Err(Error::Device(
            "this binary was built without CUDA support: rebuild with \
             `cargo build --release --features cuda` (needs the CUDA toolkit), or use device = \"cpu\""
                .into(),
        ));
    }
    Device::new_cuda(ordinal).map_err(|e| Error::Device(format!("cannot open cuda:{ordinal}: {e}")))
}

fn metal(ordinal: usize) -> Result<Device> {
    if !cfg!(feature = "metal") {
        return Err(Error::Device(
            "this binary was built without Metal support: rebuild with \
             `cargo build --release --features metal` (macOS), or use device = \"cpu\""
                .into(),
        ));
    }
    Device::new_metal(ordinal)
        .map_err(|e| Error::Device(format!("cannot open metal:{ordinal}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        assert!(matches!(select_device("cpu").unwrap(), Device::Cpu));
        assert!(select_device("auto").is_ok());
        assert!(select_device("tpu")
            .unwrap_err()
            .to_string()
            .contains("unknown device"));
        assert!(select_device("cuda:x").is_err());
        if !cfg!(feature = "cuda") {
            let e = select_device("cuda:1").unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
        if !cfg!(feature = "metal") {
            assert!(select_device("metal")
                .unwrap_err()
                .to_string()
                .contains("--features metal"));
        }
    }
}
