//! The names the benchmark blocks and asks for, and the same block list
//! written in each server's own syntax.

use std::{
    collections::HashSet,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, ensure};

/// The real lists the blocked names come from, in order: 1Hosts Pro, then
/// its Xtra add-on (368k distinct names together).
const SOURCES: [&str; 2] = [
    "/work/shared/data/blocklists/domains_1hosts-pro_2021-03-17.txt",
    "/work/shared/data/blocklists/domains_1hosts-xtra-addon_2021-03-17.txt",
];

/// Zone the upstream answers for; allowed-name queries ask names under it.
pub const ALLOWED_ZONE: &str = "allowed.bench";

/// Distinct names asked in the allowed-name runs. All fit in every
/// server's cache, so after the warm-up pass every answer is a cache hit.
pub const ALLOWED_NAMES: usize = 1_000;

/// Distinct, lower-case, syntactically plain names of the real lists, in
/// file order.
pub fn real_names() -> Result<Vec<String>> {
    let mut seen = HashSet::new();
    let mut names = Vec::new();
    for source in SOURCES {
        let text = std::fs::read_to_string(source).with_context(|| format!("read the block list {source}"))?;
        for line in text.lines() {
            let name = line.split('#').next().unwrap_or("").trim().trim_end_matches('.').to_ascii_lowercase();
            let plain = name.contains('.')
                && name.len() <= 253
                && name.split('.').all(|label| !label.is_empty() && label.len() <= 63)
                && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'.' || byte == b'-');
            if plain && seen.insert(name.clone()) {
                names.push(name);
            }
        }
    }
    ensure!(!names.is_empty(), "no names found in {SOURCES:?}");
    Ok(names)
}

/// The first `count` names: real ones first, then synthetic ones under
/// `bench-block.test` when the real lists run out (as for 1M names).
pub fn blocked_names(real: &[String], count: usize) -> Vec<String> {
    let mut names: Vec<String> = real.iter().take(count).cloned().collect();
    let mut index = 0;
    while names.len() < count {
        names.push(format!("ads{index}.tracker{}.bench-block.test", index % 997));
        index += 1;
    }
    names
}

/// Allowed name number `index`.
pub fn allowed_name(index: usize) -> String {
    format!("host{index}.{ALLOWED_ZONE}")
}

/// One block list, written in every syntax the servers read.
#[derive(Debug, Clone)]
pub struct ListFiles {
    /// Names in the list.
    pub names: usize,
    /// One name per line, for dnsgate (`domains:`) and dnsdist.
    pub domains: PathBuf,
    /// `address=/NAME/0.0.0.0` lines, for dnsmasq.
    pub dnsmasq: PathBuf,
    /// `local-zone: "NAME." always_null` lines, for unbound.
    pub unbound: PathBuf,
}

/// Writes `names` into `dir` in each server's syntax.
///
/// The dnsmasq and unbound forms block the name's subtree as well; the
/// queries only ask for listed names, so every server gives the same answer.
pub fn write_list_files(dir: &Path, label: &str, names: &[String]) -> Result<ListFiles> {
    let mut domains = String::new();
    let mut dnsmasq = String::new();
    let mut unbound = String::from("server:\n");
    for name in names {
        writeln!(domains, "{name}")?;
        writeln!(dnsmasq, "address=/{name}/0.0.0.0")?;
        writeln!(unbound, "    local-zone: \"{name}.\" always_null")?;
    }
    let files = ListFiles {
        names: names.len(),
        domains: dir.join(format!("{label}.domains")),
        dnsmasq: dir.join(format!("{label}.dnsmasq.conf")),
        unbound: dir.join(format!("{label}.unbound.conf")),
    };
    for (path, text) in [(&files.domains, domains), (&files.dnsmasq, dnsmasq), (&files.unbound, unbound)] {
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(files)
}

/// Writes a dnsperf query file: `NAME A` lines for `names`.
pub fn write_query_file(path: &Path, names: &[String]) -> Result<()> {
    let mut text = String::new();
    for name in names {
        writeln!(text, "{name} A")?;
    }
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

/// Up to `count` names spread evenly over `names`, so a query file samples
/// the whole list rather than its head.
pub fn spread(names: &[String], count: usize) -> Vec<String> {
    let step = (names.len() / count.max(1)).max(1);
    names.iter().step_by(step).take(count).cloned().collect()
}
