//! What the bench ran on, read from /proc and /sys: the CPU, its cores and
//! SMT siblings, the kernel, whether it is a virtual machine, where the two
//! sides were placed and how those two CPUs relate, and how busy the
//! machine was when the run started.

use std::collections::BTreeSet;
use std::fs;

/// Where the two sides of every row ran.
#[derive(Clone, Debug)]
pub enum Placement {
    Pinned {
        parent: usize,
        child: usize,
    },
    /// Why not.
    Unpinned(String),
}

impl Placement {
    pub fn child_cpu(&self) -> Option<usize> {
        match self {
            Placement::Pinned { child, .. } => Some(*child),
            Placement::Unpinned(_) => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Placement::Pinned { parent, child } => {
                format!(
                    "parent (or first thread) on CPU {parent}, child (or second thread) on CPU {child}"
                )
            }
            Placement::Unpinned(why) => format!("not pinned: {why}"),
        }
    }
}

/// Where a CPU sits in the topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Position {
    package: i64,
    core: i64,
}

pub struct Machine {
    /// CPUs this process may run on.
    pub cpus: usize,
    /// Physical cores and hardware threads per core among the online CPUs.
    pub cores: Option<usize>,
    pub threads_per_core: Option<usize>,
    pub placement: Placement,
    pub kernel: String,
    pub cpu_model: String,
    /// "KVM", "QEMU", ... when running under a hypervisor; `None` on bare
    /// metal (as far as /proc/cpuinfo and DMI can tell).
    pub hypervisor: Option<String>,
    /// How the two pinned CPUs relate: `smt-siblings` (one core),
    /// `separate-cores` or `separate-packages`.
    pub pair: Option<&'static str>,
    pub load_average: Option<f64>,
    /// Runnable tasks, this process included.
    pub procs_running: Option<u64>,
}

fn read(path: &str) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_owned())
}

fn position(cpu: usize) -> Option<Position> {
    let field = |name: &str| -> Option<i64> {
        read(&format!("/sys/devices/system/cpu/cpu{cpu}/topology/{name}"))?
            .parse()
            .ok()
    };
    Some(Position {
        package: field("physical_package_id")?,
        core: field("core_id")?,
    })
}

fn online_cpus() -> Vec<usize> {
    let Some(list) = read("/sys/devices/system/cpu/online") else {
        return Vec::new();
    };
    parse_cpu_list(&list)
}

/// `0-3,6,8-9` as a list of CPU numbers.
fn parse_cpu_list(list: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(first), Ok(last)) = (first.parse::<usize>(), last.parse::<usize>()) {
            cpus.extend(first..=last.min(first + 4096));
        }
    }
    cpus
}

/// The first value of `key` in /proc/cpuinfo.
fn cpuinfo_field<'a>(cpuinfo: &'a str, key: &str) -> Option<&'a str> {
    cpuinfo.lines().find_map(|line| {
        let (k, value) = line.split_once(':')?;
        (k.trim() == key).then(|| value.trim())
    })
}

fn hypervisor(cpuinfo: &str) -> Option<String> {
    let flagged = cpuinfo_field(cpuinfo, "flags")
        .is_some_and(|flags| flags.split_whitespace().any(|f| f == "hypervisor"));
    let xen = read("/sys/hypervisor/type");
    let vendor = read("/sys/class/dmi/id/sys_vendor");
    let product = read("/sys/class/dmi/id/product_name");
    let dmi = [vendor.as_deref(), product.as_deref()]
        .into_iter()
        .flatten()
        .find_map(|text| {
            [
                "KVM",
                "QEMU",
                "VMware",
                "VirtualBox",
                "Xen",
                "Virtual Machine",
                "Google",
                "Amazon EC2",
                "HVM domU",
                "Firecracker",
                "Cloud Hypervisor",
            ]
            .into_iter()
            .find(|name| text.contains(name))
        });
    match (flagged, xen, dmi) {
        (_, Some(kind), _) => Some(kind),
        (_, None, Some(name)) => Some(name.to_owned()),
        (true, None, None) => Some("unknown hypervisor".to_owned()),
        (false, None, None) => None,
    }
}

impl Machine {
    pub fn detect(cpus: usize, placement: Placement) -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let online = online_cpus();
        let positions: Vec<Position> = online.iter().filter_map(|&cpu| position(cpu)).collect();
        let cores = (!positions.is_empty() && positions.len() == online.len())
            .then(|| positions.iter().collect::<BTreeSet<_>>().len());
        let threads_per_core = cores.map(|cores| online.len().div_ceil(cores.max(1)));
        let pair = match placement {
            Placement::Pinned { parent, child } => match (position(parent), position(child)) {
                (Some(a), Some(b)) if a == b => Some("smt-siblings"),
                (Some(a), Some(b)) if a.package == b.package => Some("separate-cores"),
                (Some(_), Some(_)) => Some("separate-packages"),
                _ => None,
            },
            Placement::Unpinned(_) => None,
        };
        let loadavg = read("/proc/loadavg");
        let load_average = loadavg
            .as_deref()
            .and_then(|text| text.split_whitespace().next()?.parse().ok());
        let procs_running = fs::read_to_string("/proc/stat").ok().and_then(|stat| {
            stat.lines()
                .find_map(|line| line.strip_prefix("procs_running"))
                .and_then(|n| n.trim().parse().ok())
        });
        Machine {
            cpus,
            cores,
            threads_per_core,
            placement,
            kernel: read("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".to_owned()),
            // x86 prints `model name`; Arm kernels print none.
            cpu_model: cpuinfo_field(&cpuinfo, "model name")
                .unwrap_or("unknown")
                .to_owned(),
            hypervisor: hypervisor(&cpuinfo),
            pair,
            load_average,
            procs_running,
        }
    }

    /// A sentence if the machine looked busy when the run started: a load
    /// average above the CPUs we may use, or tasks other than ours ready
    /// to run.
    pub fn busy_warning(&self) -> Option<String> {
        let overloaded = self
            .load_average
            .is_some_and(|load| load > self.cpus as f64);
        let others_running = self.procs_running.is_some_and(|n| n > 1);
        (overloaded || others_running).then(|| {
            format!(
                "the machine is busy (load average {}, {} runnable tasks besides this one, {} CPUs): \
                 figures will be noisy",
                self.load_average.map_or("?".to_owned(), |l| format!("{l:.2}")),
                self.procs_running.map_or("?".to_owned(), |n| n.saturating_sub(1).to_string()),
                self.cpus
            )
        })
    }

    /// One line for the table's heading.
    pub fn describe(&self) -> String {
        let topology = match (self.cores, self.threads_per_core) {
            (Some(cores), Some(threads)) => format!(", {cores} cores x {threads} threads online"),
            _ => String::new(),
        };
        format!(
            "{} CPU{} usable ({}{topology}), kernel {}, {}",
            self.cpus,
            if self.cpus == 1 { "" } else { "s" },
            self.cpu_model,
            self.kernel,
            match &self.hypervisor {
                Some(kind) => format!("virtual machine ({kind})"),
                None => "bare metal".to_owned(),
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_x86_model_name() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpuinfo_field(cpuinfo, "model name"), Some("AMD EPYC 7B13"));
        assert_eq!(
            cpuinfo_field("processor\t: 0\nBogoMIPS\t: 50.00\n", "model name"),
            None
        );
    }

    #[test]
    fn parses_cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,6,8-9\n"), vec![0, 1, 2, 3, 6, 8, 9]);
        assert_eq!(parse_cpu_list("0"), vec![0]);
        assert!(parse_cpu_list("").is_empty());
    }
}
