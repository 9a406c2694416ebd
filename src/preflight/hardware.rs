//! The memory this machine has: RAM and swap (sysinfo), GPUs (NVML, else llama.cpp's device
//! list), and whether this binary can offload at all. A plan for another machine can be made by
//! overriding each figure (`--ram`, `--swap`, `--gpu-memory`).

use crate::error::Result;
use crate::record::{BackendFacts, GpuDevice};
use nvml_wrapper::Nvml;
use serde::Serialize;
use sysinfo::{MemoryRefreshKind, System};

/// One GPU's memory.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Gpu {
    /// Device index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Device memory.
    pub total_bytes: u64,
    /// Free device memory now.
    pub free_bytes: u64,
    /// Where the figures come from: `nvml`, `llama.cpp` or `assumed`.
    pub source: String,
}

/// Memory available to a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Hardware {
    /// Host RAM.
    pub ram_total_bytes: u64,
    /// RAM available for new allocations (MemAvailable).
    pub ram_available_bytes: u64,
    /// Swap configured.
    pub swap_total_bytes: u64,
    /// Swap free.
    pub swap_free_bytes: u64,
    /// GPUs (empty when none is visible).
    pub gpus: Vec<Gpu>,
    /// llama.cpp in this binary can offload layers to a GPU (or the plan assumes a CUDA build).
    pub can_offload: bool,
    /// NVML loaded.
    pub nvml: bool,
    /// Some figures are assumed (a plan for another machine), not measured.
    pub assumed: bool,
    /// One line on how offloading was decided.
    pub offload_note: String,
}

/// Figures to assume instead of measuring (planning for another machine).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Assume {
    /// Host RAM (also taken as available).
    pub ram: Option<u64>,
    /// Swap (also taken as free).
    pub swap: Option<u64>,
    /// One GPU with this much free memory (implies a CUDA build).
    pub gpu_memory: Option<u64>,
}

impl Hardware {
    /// Measure this machine (RAM and swap; GPUs from NVML, else from llama.cpp's device list in
    /// `backend`), then apply `assume`.
    pub fn detect(assume: Assume, backend: &BackendFacts) -> Hardware {
        let mut hw = Hardware::measure(backend);
        hw.apply_assumed(assume);
        if !hw.can_offload {
            // A GPU the binary cannot use does not count towards the plan.
            hw.gpus.clear();
        }
        hw
    }

    /// This machine as measured: RAM and swap from sysinfo, GPUs from NVML, else llama.cpp.
    fn measure(backend: &BackendFacts) -> Hardware {
        let llama_gpus = &backend.gpus;
        let mut system = System::new();
        system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram().with_swap());
        let (nvml, nvml_gpus) = nvml_gpus();
        let gpus = if nvml_gpus.is_empty() {
            llama_cpp_gpus(llama_gpus)
        } else {
            nvml_gpus
        };
        Hardware {
            ram_total_bytes: system.total_memory(),
            ram_available_bytes: system.available_memory(),
            swap_total_bytes: system.total_swap(),
            swap_free_bytes: system.free_swap(),
            offload_note: offload_note(backend, nvml, !gpus.is_empty()),
            gpus,
            can_offload: !llama_gpus.is_empty(),
            nvml,
            assumed: false,
        }
    }

    /// Replace each measured figure that `assume` gives (planning for another machine).
    fn apply_assumed(&mut self, assume: Assume) {
        if let Some(ram) = assume.ram {
            self.ram_total_bytes = ram;
            self.ram_available_bytes = ram;
            self.assumed = true;
        }
        if let Some(swap) = assume.swap {
            self.swap_total_bytes = swap;
            self.swap_free_bytes = swap;
            self.assumed = true;
        }
        if let Some(memory) = assume.gpu_memory {
            self.gpus = vec![Gpu {
                index: 0,
                name: "GPU".into(),
                total_bytes: memory,
                free_bytes: memory,
                source: "assumed".into(),
            }];
            self.can_offload = true;
            self.assumed = true;
            self.offload_note = "assumed GPU (--gpu-memory): planned for a CUDA build".into();
        }
    }

    /// Free memory of the GPU llama.cpp offloads to first.
    pub fn gpu_free(&self) -> u64 {
        self.gpus.first().map_or(0, |g| g.free_bytes)
    }
}

/// llama.cpp's device list as GPUs (used when NVML sees none).
fn llama_cpp_gpus(llama_gpus: &[GpuDevice]) -> Vec<Gpu> {
    llama_gpus
        .iter()
        .enumerate()
        .map(|(i, d)| Gpu {
            index: i as u32,
            name: d.description.clone(),
            total_bytes: d.memory_total,
            free_bytes: d.memory_free,
            source: "llama.cpp".into(),
        })
        .collect()
}

/// One line on why this binary can or cannot offload, naming what to change when a GPU is
/// present but unusable.
fn offload_note(backend: &BackendFacts, nvml: bool, gpu_present: bool) -> String {
    let llama_gpus = &backend.gpus;
    if !llama_gpus.is_empty() {
        format!(
            "llama.cpp sees {} GPU(s) ({})",
            llama_gpus.len(),
            llama_gpus[0].backend
        )
    } else if cfg!(feature = "cuda") {
        format!(
            "no CUDA device ({}; {}): planned for the CPU",
            backend
                .gpu_absence
                .as_deref()
                .unwrap_or("llama.cpp lists none"),
            if nvml {
                "NVML sees none usable"
            } else {
                "no NVML"
            }
        )
    } else if gpu_present {
        "a GPU is present (NVML) but this is a CPU-only build: CPU only (rebuild with `make build-cuda`)".into()
    } else {
        format!(
            "CPU-only build, {}: CPU only",
            if nvml { "NVML found no GPU" } else { "no NVML" }
        )
    }
}

fn nvml_gpus() -> (bool, Vec<Gpu>) {
    let Ok(nvml) = Nvml::init() else {
        return (false, Vec::new());
    };
    let count = nvml.device_count().unwrap_or(0);
    let gpus = (0..count)
        .filter_map(|index| {
            let device = nvml.device_by_index(index).ok()?;
            let memory = device.memory_info().ok()?;
            Some(Gpu {
                index,
                name: device.name().unwrap_or_default(),
                total_bytes: memory.total,
                free_bytes: memory.free,
                source: "nvml".into(),
            })
        })
        .collect();
    (true, gpus)
}

/// Parse a size such as `40GB` (10^9), `40GiB` or `40G` (2^30), `512M`, `87.5GB`, `1000000`.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size like 40GB, 24GiB or 512M"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let scale: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "kb" => 1e3,
        "m" | "mib" => (1u64 << 20) as f64,
        "mb" => 1e6,
        "g" | "gib" => (1u64 << 30) as f64,
        "gb" => 1e9,
        "t" | "tib" => (1u64 << 40) as f64,
        "tb" => 1e12,
        _ => {
            return Err(format!(
                "'{text}' has an unknown unit; use B, K/KiB/KB, M/MiB/MB, G/GiB/GB or T/TiB/TB"
            ))
        }
    };
    let bytes = value * scale;
    if !bytes.is_finite() || !(0.0..=1e18).contains(&bytes) {
        return Err(format!("'{text}' is out of range"));
    }
    Ok(bytes as u64)
}

/// A size flag's value, or a usage error naming the flag.
pub fn size_flag(flag: &str, text: Option<&str>) -> Result<Option<u64>> {
    text.map(|t| parse_size(t).map_err(|e| crate::error::usage(format!("{flag}: {e}"))))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_decimal_and_binary_units() {
        assert_eq!(parse_size("40GB"), Ok(40_000_000_000));
        assert_eq!(parse_size("40GiB"), Ok(40 << 30));
        assert_eq!(parse_size("40G"), Ok(40 << 30));
        assert_eq!(parse_size("87.5GB"), Ok(87_500_000_000));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size(" 2 gib "), Ok(2 << 30));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
        let e = size_flag("--ram", Some("x")).unwrap_err().to_string();
        assert!(e.starts_with("--ram:"), "{e}");
    }

    #[test]
    fn assumed_figures_replace_measured_ones() {
        let hw = Hardware::detect(
            Assume {
                ram: Some(87_500_000_000),
                swap: Some(0),
                gpu_memory: Some(40_000_000_000),
            },
            &BackendFacts::default(),
        );
        assert!(hw.assumed && hw.can_offload);
        assert_eq!(hw.ram_available_bytes, 87_500_000_000);
        assert_eq!(hw.gpu_free(), 40_000_000_000);
        let here = Hardware::detect(Assume::default(), &BackendFacts::default());
        assert!(here.ram_total_bytes > 0);
        if !here.can_offload {
            assert!(here.gpus.is_empty());
        }
    }
}
