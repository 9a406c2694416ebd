//! Memory probe: process RSS, RAM and swap through sysinfo; per-GPU memory and utilisation
//! through NVML when its library loads (absent NVML is normal, not an error: GPU fields stay empty).

use crate::record::{BuildInfo, HostGpu, HostRecord};
use nvml_wrapper::Nvml;
use serde::Serialize;
use sysinfo::{MemoryRefreshKind, Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// One GPU's state at a sample.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GpuSample {
    /// NVML device index.
    pub index: u32,
    /// Device name.
    pub name: String,
    /// Memory used on the device (all processes).
    pub used_bytes: u64,
    /// Device memory.
    pub total_bytes: u64,
    /// Kernel utilisation over NVML's last sample period.
    pub util_pct: Option<u32>,
}

/// Memory state at one instant.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MemorySample {
    /// When, as stored in the database.
    pub at: String,
    /// Resident set size of this process.
    pub rss_bytes: u64,
    /// RAM in use on the host (total minus available).
    pub ram_used_bytes: u64,
    /// Host RAM.
    pub ram_total_bytes: u64,
    /// Swap in use.
    pub swap_used_bytes: u64,
    /// Swap configured.
    pub swap_total_bytes: u64,
    /// One entry per NVML device; empty without NVML.
    pub gpus: Vec<GpuSample>,
}

impl MemorySample {
    /// GPU memory used, summed over devices; `None` without NVML.
    pub fn gpu_used_bytes(&self) -> Option<u64> {
        (!self.gpus.is_empty()).then(|| self.gpus.iter().map(|g| g.used_bytes).sum())
    }
}

fn report_nvml_absence(error: &nvml_wrapper::error::NvmlError) {
    static REPORTED: std::sync::Once = std::sync::Once::new();
    REPORTED.call_once(|| {
        let text = format!("NVML not available ({error}); GPU memory columns stay NULL");
        if cfg!(feature = "cuda") {
            log::info!("{text}");
        } else {
            log::debug!("{text}");
        }
    });
}

/// Reads memory figures; keep one per thread that samples.
pub struct Probe {
    system: System,
    pid: Pid,
    nvml: Option<Nvml>,
}

impl Probe {
    /// A probe for this process. NVML is tried once per probe; its absence is reported once per
    /// process (a note in a GPU build, where a GPU is expected; debug detail in a CPU build).
    pub fn new() -> Probe {
        let nvml = match Nvml::init() {
            Ok(nvml) => Some(nvml),
            Err(e) => {
                report_nvml_absence(&e);
                None
            }
        };
        Probe {
            system: System::new(),
            pid: Pid::from_u32(std::process::id()),
            nvml,
        }
    }

    /// Whether NVML loaded.
    pub fn has_nvml(&self) -> bool {
        self.nvml.is_some()
    }

    /// Take a sample now.
    pub fn sample(&mut self) -> MemorySample {
        self.system
            .refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram().with_swap());
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[self.pid]),
            false,
            ProcessRefreshKind::nothing().with_memory(),
        );
        let rss_bytes = self.system.process(self.pid).map_or(0, |p| p.memory());
        let ram_total_bytes = self.system.total_memory();
        MemorySample {
            at: crate::units::now_text(),
            rss_bytes,
            ram_used_bytes: ram_total_bytes.saturating_sub(self.system.available_memory()),
            ram_total_bytes,
            swap_used_bytes: self.system.used_swap(),
            swap_total_bytes: self.system.total_swap(),
            gpus: self.gpu_samples(),
        }
    }

    fn gpu_samples(&self) -> Vec<GpuSample> {
        let Some(nvml) = &self.nvml else {
            return Vec::new();
        };
        let count = nvml.device_count().unwrap_or(0);
        (0..count)
            .filter_map(|index| {
                let device = nvml.device_by_index(index).ok()?;
                let memory = device.memory_info().ok()?;
                Some(GpuSample {
                    index,
                    name: device.name().unwrap_or_default(),
                    used_bytes: memory.used,
                    total_bytes: memory.total,
                    util_pct: device.utilization_rates().ok().map(|u| u.gpu),
                })
            })
            .collect()
    }
}

/// The machine and build a run starts on, stored once per run (`runs.host_json`).
/// `llama_system_info` is the engine's description of the CPU features llama.cpp uses.
pub fn host_record(llama_system_info: &str) -> HostRecord {
    let sample = Probe::new().sample();
    let mut system = sysinfo::System::new();
    system.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
    HostRecord {
        hostname: sysinfo::System::host_name(),
        os: sysinfo::System::long_os_version(),
        cpu: system.cpus().first().map(|c| c.brand().trim().to_string()),
        logical_cpus: system.cpus().len(),
        ram_total_bytes: sample.ram_total_bytes,
        swap_total_bytes: sample.swap_total_bytes,
        gpus: sample
            .gpus
            .iter()
            .map(|g| HostGpu {
                index: g.index,
                name: g.name.clone(),
                total_bytes: g.total_bytes,
            })
            .collect(),
        llama_system_info: llama_system_info.to_string(),
        build: BuildInfo::current(),
    }
}

impl Default for Probe {
    fn default() -> Self {
        Probe::new()
    }
}

/// One line of the live view: RAM, swap and each GPU.
pub fn sample_line(sample: &MemorySample) -> String {
    let mut line = format!(
        "{}  RAM {:6.2} / {:.2} GiB  swap {:6.2} / {:.2} GiB",
        sample.at,
        crate::units::gib_value(sample.ram_used_bytes),
        crate::units::gib_value(sample.ram_total_bytes),
        crate::units::gib_value(sample.swap_used_bytes),
        crate::units::gib_value(sample.swap_total_bytes)
    );
    for gpu in &sample.gpus {
        line += &format!(
            "  GPU{} {} {:6.2} / {:.2} GiB {:>3}%",
            gpu.index,
            gpu.name,
            crate::units::gib_value(gpu.used_bytes),
            crate::units::gib_value(gpu.total_bytes),
            gpu.util_pct.map_or("-".to_string(), |u| u.to_string())
        );
    }
    line
}

/// `docent-eval monitor`: print a sample line every `interval` (the team's
/// `watch nvidia-smi; free -h`), `count` times or until interrupted.
pub fn watch(
    interval: std::time::Duration,
    count: Option<u64>,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let mut probe = Probe::new();
    if !probe.has_nvml() {
        writeln!(out, "NVML not available: showing RAM and swap only")?;
    }
    let mut printed = 0u64;
    loop {
        writeln!(out, "{}", sample_line(&probe.sample()))?;
        out.flush()?;
        printed += 1;
        if count.is_some_and(|c| printed >= c) {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_reads_real_memory_figures() {
        let mut probe = Probe::new();
        let sample = probe.sample();
        assert!(
            sample.rss_bytes > 1 << 20,
            "RSS of a running test is over 1 MiB: {sample:?}"
        );
        assert!(sample.ram_total_bytes >= sample.ram_used_bytes);
        assert!(sample.ram_used_bytes > 0);
        assert!(sample.swap_total_bytes >= sample.swap_used_bytes);
        if !probe.has_nvml() {
            assert!(sample.gpus.is_empty());
            assert_eq!(sample.gpu_used_bytes(), None);
        }
        assert!(
            sample.at.ends_with('Z') && sample.at.len() == 24,
            "{}",
            sample.at
        );
    }
}
