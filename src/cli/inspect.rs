//! `ls`, `stat` and `rm`: the ipcs/ipcrm of ipcring segments.

use ipcring::segment::{self, Address, Participant, Removed, Segment, SegmentError, SegmentInfo};
use serde_json::{Value, json};

pub fn ls(as_json: bool) -> Result<(), String> {
    let listings = segment::list().map_err(|e| format!("ls: {e}"))?;
    if as_json {
        let items: Vec<Value> = listings
            .iter()
            .map(|l| match &l.info {
                Ok(info) => info_json(&l.address.to_string(), info),
                Err(e) => json!({ "name": l.address.to_string(), "error": e.to_string() }),
            })
            .collect();
        println!("{}", Value::Array(items));
        return Ok(());
    }
    println!(
        "{:<32} {:<6} {:>12} {:>5} {:>6} {:>8} {:>12} {:>8}",
        "NAME", "TYPE", "SIZE", "MODE", "OWNER", "CPID", "ALIVE/DEAD", "KIND"
    );
    for listing in &listings {
        match &listing.info {
            Ok(info) => {
                let (alive, dead) = count_alive(&info.participants);
                println!(
                    "{:<32} {:<6} {:>12} {:>5} {:>6} {:>8} {:>12} {:>8}",
                    listing.address.to_string(),
                    info.backing.as_str(),
                    info.total_size,
                    format!("{:04o}", info.mode),
                    info.owner_uid,
                    info.creator_pid,
                    format!("{alive}/{dead}"),
                    kind_name(info.kind)
                );
            }
            Err(e) => println!("{:<32} ({e})", listing.address.to_string()),
        }
    }
    Ok(())
}

pub fn stat(name: &str, as_json: bool) -> Result<(), String> {
    let address: Address = name
        .parse()
        .map_err(|e: SegmentError| format!("stat: {e}"))?;
    let info = Segment::inspect(&address).map_err(|e| format!("stat: {e}"))?;
    let repairs = channel_stats(&address, info.kind);
    let queue = crate::queue_cmd::stats(&address, info.kind);
    let repairs = repairs.or(queue.map(|q| ipcring::channel::ChannelStats {
        repairs: q.repairs,
        losses: q.losses,
    }));
    if as_json {
        let mut value = info_json(&address.to_string(), &info);
        if let Some(stats) = repairs {
            value["repairs"] = json!(stats.repairs);
            value["losses"] = json!(stats.losses);
        }
        if let Some(stats) = &queue {
            value["queue"] = crate::queue_cmd::stats_json(stats);
        }
        println!("{value}");
        return Ok(());
    }
    let (alive, dead) = count_alive(&info.participants);
    println!("name:           {address}");
    println!("backing:        {}", info.backing.as_str());
    println!("kind:           {} ({})", kind_name(info.kind), info.kind);
    println!("layout version: {}", info.layout_version);
    println!("total size:     {} bytes", info.total_size);
    println!("user size:      {} bytes", info.user_size);
    println!("mode:           {:04o}", info.mode);
    println!("owner uid:      {}", info.owner_uid);
    println!(
        "creator:        pid {} uid {}",
        info.creator_pid, info.creator_uid
    );
    println!(
        "created:        {} (ns since the Unix epoch)",
        info.created_realtime_ns
    );
    match info.creator_alive {
        None => println!("lifetime:       persistent"),
        Some(true) => println!("lifetime:       owned by its creator, which is alive"),
        Some(false) => println!("lifetime:       owned by its creator, which is gone (stale)"),
    }
    println!("participants:   {alive} alive, {dead} dead");
    for p in &info.participants {
        let state = if p.alive { "alive" } else { "dead" };
        println!("  pid {:<10} {state}", p.pid);
    }
    if let Some(stats) = &queue {
        crate::queue_cmd::print_stats(stats);
    }
    if let Some(stats) = repairs {
        println!(
            "repairs:        {} (claims of dead endpoints repaired)",
            stats.repairs
        );
        println!(
            "losses:         {} (items dropped with a receiver that died holding them)",
            stats.losses
        );
    }
    Ok(())
}

/// The repair counters of a many-writer channel (MPMC, records, streams),
/// read through a read-only mapping; `None` for other kinds, or if
/// unreadable.
fn channel_stats(address: &Address, kind: u32) -> Option<ipcring::channel::ChannelStats> {
    use ipcring::channel::{mpmc, records, stream};
    if ![
        mpmc::KIND,
        records::KIND_SINGLE,
        records::KIND_MANY,
        stream::KIND,
    ]
    .contains(&kind)
    {
        return None;
    }
    let options = ipcring::segment::OpenOptions::new()
        .read_only()
        .allow_foreign_owner(true)
        .timeout(std::time::Duration::ZERO);
    let segment = Segment::open(address, &options).ok()?;
    ipcring::channel::stats(&segment).ok()
}

pub fn rm(names: &[String]) -> Result<(), String> {
    let mut failures = Vec::new();
    for name in names {
        let removed = name.parse::<Address>().and_then(|address| {
            // A queue is marked removed first, as `Queue::remove` does, so
            // that handles blocked in it end with `Removed` instead of
            // waiting for ever on a queue nobody can reach again. Anything
            // else (another kind, a queue we cannot open) is unlinked as
            // it is.
            match ipcring::channel::queue::Queue::remove(&address) {
                Ok(()) => Ok(()),
                Err(_) => Segment::remove(&address),
            }
        });
        if let Err(e) = removed {
            failures.push(format!("rm {name}: {e}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\nipcring: "))
    }
}

pub fn rm_stale(names: &[String]) -> Result<(), String> {
    let only = names
        .iter()
        .map(|name| name.parse::<Address>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("rm --stale: {e}"))?;
    let removed = if only.is_empty() {
        segment::remove_stale()
    } else {
        segment::remove_stale_where(|address| only.contains(address))
    }
    .map_err(|e| format!("rm --stale: {e}"))?;
    if removed.is_empty() {
        println!("nothing stale");
    }
    for Removed { address, reason } in &removed {
        println!("removed {address}: {reason}");
    }
    Ok(())
}

/// A segment kind by name: the channel kinds this library makes, else its
/// four ASCII letters, else the number.
pub(crate) fn kind_name(kind: u32) -> String {
    use ipcring::channel::{mpmc, queue, records, spsc, stream};
    match kind {
        queue::KIND => "queue".into(),
        stream::KIND => "stream".into(),
        spsc::KIND => "spsc".into(),
        mpmc::KIND => "mpmc".into(),
        records::KIND_SINGLE | records::KIND_MANY => "records".into(),
        _ => {
            let bytes = kind.to_le_bytes();
            if bytes.iter().all(|b| b.is_ascii_alphanumeric()) {
                String::from_utf8_lossy(&bytes).to_lowercase()
            } else {
                kind.to_string()
            }
        }
    }
}

fn count_alive(participants: &[Participant]) -> (usize, usize) {
    let alive = participants.iter().filter(|p| p.alive).count();
    (alive, participants.len() - alive)
}

fn info_json(name: &str, info: &SegmentInfo) -> Value {
    let participants: Vec<Value> = info
        .participants
        .iter()
        .map(|p| json!({ "slot": p.slot, "pid": p.pid, "alive": p.alive, "attached_unix_ns": p.attached_realtime_ns }))
        .collect();
    let (alive, dead) = count_alive(&info.participants);
    json!({
        "name": name,
        "backing": info.backing.as_str(),
        "kind": info.kind,
        "kind_name": kind_name(info.kind),
        "layout_version": info.layout_version,
        "total_size": info.total_size,
        "user_size": info.user_size,
        "mode": format!("{:04o}", info.mode),
        "owner_uid": info.owner_uid,
        "creator_pid": info.creator_pid,
        "creator_uid": info.creator_uid,
        "created_unix_ns": info.created_realtime_ns,
        "owned": info.owned,
        "creator_alive": info.creator_alive,
        "participants_alive": alive,
        "participants_dead": dead,
        "participants": participants,
    })
}
