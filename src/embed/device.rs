//! Device choice, in one function: `auto` tries CUDA, then Metal, then the CPU, and a request
//! for a backend this binary lacks says which `--features` to rebuild with.
//!
//! Every CUDA- or Metal-specific line of the crate is in this file, behind `cfg!` rather than
//! `#[cfg]` where candle allows it, so a CPU build type-checks the same code the `cuda` and
//! `metal` features run.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use crate::error::{Error, Result};

/// Which device to embed on, as the config and `--device` name it:
/// `auto | cpu | cuda | cuda:N | metal | metal:N`. Parsing needs no GPU; [`select_device`]
/// opens it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// CUDA if compiled in and usable, then Metal likewise, then the CPU.
    Auto,
    Cpu,
    Cuda(usize),
    Metal(usize),
}

impl FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self> {
        let spec = spec.trim().to_ascii_lowercase();
        let (kind, ordinal) = match spec.split_once(':') {
            Some((k, n)) => {
                let n: usize = n
                    .parse()
                    .map_err(|_| Error::Device(format!("bad device ordinal in `{spec}`")))?;
                (k, Some(n))
            }
            None => (spec.as_str(), None),
        };
        match (kind, ordinal) {
            ("auto", None) => Ok(DeviceSpec::Auto),
            ("cpu", None) => Ok(DeviceSpec::Cpu),
            ("cuda", n) => Ok(DeviceSpec::Cuda(n.unwrap_or(0))),
            ("metal", n) => Ok(DeviceSpec::Metal(n.unwrap_or(0))),
            _ => Err(Error::Device(format!(
                "unknown device `{spec}`: use auto, cpu, cuda, cuda:N, metal or metal:N"
            ))),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceSpec::Metal(n) => write!(f, "metal:{n}"),
        }
    }
}

/// Opens the device a spec names.
pub fn select_device(spec: DeviceSpec) -> Result<Device> {
    match spec {
        DeviceSpec::Auto => Ok(auto()),
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Cuda(n) => cuda(n),
        DeviceSpec::Metal(n) => metal(n),
    }
}

/// A GPU: the one a spec names, or with `auto` the first that opens (CUDA, then Metal). The
/// error of `auto` says what was tried and why each failed.
pub fn select_gpu(spec: DeviceSpec) -> Result<Device> {
    let message = |e: Error| match e {
        Error::Device(m) => m,
        e => e.to_string(),
    };
    match spec {
        DeviceSpec::Cpu => Err(Error::Device("the CPU is not a GPU".into())),
        DeviceSpec::Cuda(n) => cuda(n),
        DeviceSpec::Metal(n) => metal(n),
        DeviceSpec::Auto => {
            let mut tried = Vec::new();
            for spec in [DeviceSpec::Cuda(0), DeviceSpec::Metal(0)] {
                match select_device(spec) {
                    Ok(d) => return Ok(d),
                    Err(e) => tried.push(format!("{spec}: {}", message(e))),
                }
            }
            Err(Error::Device(format!(
                "no GPU found ({})",
                tried.join("; ")
            )))
        }
    }
}

/// Why a device did not open, in one line: candle appends a backtrace when RUST_BACKTRACE is
/// set, which says nothing to a user (the driver's error comes first).
fn open_error(kind: &str, ordinal: usize, e: candle_core::Error) -> Error {
    let e = e.to_string();
    let first = e.lines().next().unwrap_or("unknown error");
    Error::Device(format!("cannot open {kind}:{ordinal}: {first}"))
}

/// Whether a device is a GPU (CUDA or Metal).
pub fn is_gpu(device: &Device) -> bool {
    !device.is_cpu()
}

/// Waits until the device has finished the work queued on it, so a timer read afterwards
/// measures it (GPU kernels run asynchronously). Nothing to wait for on the CPU.
pub fn synchronize(device: &Device) -> Result<()> {
    device
        .synchronize()
        .map_err(|e| Error::Device(format!("synchronising {}: {e}", device_name(device))))
}

/// Which GPU backends this binary was built with (`cuda`, `metal`), for reports.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    if cfg!(feature = "metal") {
        v.push("metal");
    }
    v
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
    if cfg!(feature = "cuda") {
        match cuda(0) {
            Ok(d) => return d,
            Err(e) => tracing::warn!("CUDA is compiled in but unusable ({e}); trying others"),
        }
    }
    if cfg!(feature = "metal") {
        match metal(0) {
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
    Device::new_cuda(ordinal).map_err(|e| open_error("cuda", ordinal, e))
}

fn metal(ordinal: usize) -> Result<Device> {
    if !cfg!(feature = "metal") {
        return Err(Error::Device(
            "this binary was built without Metal support: rebuild with \
             `cargo build --release --features metal` (macOS), or use device = \"cpu\""
                .into(),
        ));
    }
    Device::new_metal(ordinal).map_err(|e| open_error("metal", ordinal, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let parse = |s: &str| s.parse::<DeviceSpec>();
        assert_eq!(parse("auto").unwrap(), DeviceSpec::Auto);
        assert_eq!(parse(" CPU ").unwrap(), DeviceSpec::Cpu);
        assert_eq!(parse("cuda").unwrap(), DeviceSpec::Cuda(0));
        assert_eq!(parse("cuda:3").unwrap(), DeviceSpec::Cuda(3));
        assert_eq!(parse("metal").unwrap(), DeviceSpec::Metal(0));
        for (spec, shown) in [("cuda:1", "cuda:1"), ("metal", "metal:0"), ("auto", "auto")] {
            assert_eq!(parse(spec).unwrap().to_string(), shown);
        }
        assert!(parse("tpu")
            .unwrap_err()
            .to_string()
            .contains("unknown device"));
        assert!(parse("cpu:1").is_err());
        assert!(parse("cuda:x")
            .unwrap_err()
            .to_string()
            .contains("bad device ordinal"));
    }

    #[test]
    fn opens_or_explains() {
        assert!(matches!(
            select_device(DeviceSpec::Cpu).unwrap(),
            Device::Cpu
        ));
        // `auto` never fails: without a usable GPU it is the CPU.
        let auto = select_device(DeviceSpec::Auto).unwrap();
        if compiled_backends().is_empty() {
            assert!(auto.is_cpu());
        }
        if !cfg!(feature = "cuda") {
            let e = select_device(DeviceSpec::Cuda(1)).unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
        if !cfg!(feature = "metal") {
            let e = select_device(DeviceSpec::Metal(0)).unwrap_err().to_string();
            assert!(e.contains("--features metal"), "{e}");
        }
        synchronize(&Device::Cpu).unwrap();
        assert!(select_gpu(DeviceSpec::Cpu).is_err());
        if compiled_backends().is_empty() {
            let e = select_gpu(DeviceSpec::Auto).unwrap_err().to_string();
            assert!(
                e.contains("no GPU found") && e.contains("--features cuda"),
                "{e}"
            );
        }
        assert!(!is_gpu(&Device::Cpu));
    }
}
