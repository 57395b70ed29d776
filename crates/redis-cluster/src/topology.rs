//! Reading what the nodes say about the cluster: `CLUSTER NODES`, `CLUSTER
//! INFO` and `INFO replication`. Pure parsing, so it is tested on fixtures
//! captured from redis-server 7.0.15.

use std::collections::BTreeMap;

/// The number of hash slots in every Redis Cluster.
pub(crate) const SLOTS: u32 = 16384;

/// One line of `CLUSTER NODES`, as seen by the node that was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeLine {
    /// The 40-hex node id.
    pub(crate) id: String,
    /// Its client port (0 for a node with no known address).
    pub(crate) port: u16,
    /// This line describes the node that was asked.
    pub(crate) myself: bool,
    /// `master` (true) or `slave` (false) in the flags.
    pub(crate) master: bool,
    /// The `fail` flag: the cluster agreed the node is down. (`fail?` is
    /// one node's suspicion and is not counted.)
    pub(crate) failed: bool,
    /// The id of the master it replicates, for a replica.
    pub(crate) master_id: Option<String>,
    /// The slot ranges it serves, inclusive; importing and migrating
    /// markers (`[slot->-id]`) are left out.
    pub(crate) slots: Vec<(u16, u16)>,
}

/// Parses the text of `CLUSTER NODES`: one node a line,
/// `<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch>
/// <link> <slot>...`.
pub(crate) fn parse_nodes(text: &str) -> Result<Vec<NodeLine>, String> {
    let mut nodes = Vec::new();
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [id, address, flags, master, _ping, _pong, _epoch, _link, slots @ ..] =
            fields.as_slice()
        else {
            return Err(format!("too few fields in {line:?}"));
        };
        let port = parse_port(address).ok_or_else(|| format!("bad address in {line:?}"))?;
        let flags: Vec<&str> = flags.split(',').collect();
        let mut ranges = Vec::new();
        for slot in slots.iter().filter(|slot| !slot.starts_with('[')) {
            ranges.push(parse_range(slot).ok_or_else(|| format!("bad slot {slot:?} in {line:?}"))?);
        }
        nodes.push(NodeLine {
            id: (*id).to_owned(),
            port,
            myself: flags.contains(&"myself"),
            master: flags.contains(&"master"),
            failed: flags.contains(&"fail"),
            master_id: (*master != "-").then(|| (*master).to_owned()),
            slots: ranges,
        });
    }
    Ok(nodes)
}

/// The client port of `ip:port@cport[,hostname]`.
fn parse_port(address: &str) -> Option<u16> {
    let client = address.split('@').next()?;
    client.rsplit(':').next()?.parse().ok()
}

/// `5461-10922` or `42`.
fn parse_range(slot: &str) -> Option<(u16, u16)> {
    let (start, end) = match slot.split_once('-') {
        Some((start, end)) => (start.parse().ok()?, end.parse().ok()?),
        None => {
            let one = slot.parse().ok()?;
            (one, one)
        }
    };
    (start <= end && u32::from(end) < SLOTS).then_some((start, end))
}

/// Who serves which slots, by client port: the part of a node's view that
/// clients route by, so the part every node must agree on.
pub(crate) type SlotMap = BTreeMap<(u16, u16), u16>;

/// The slot map of one node's view.
pub(crate) fn slot_map(nodes: &[NodeLine]) -> SlotMap {
    let mut map = SlotMap::new();
    for node in nodes.iter().filter(|node| node.master) {
        for &range in &node.slots {
            map.insert(range, node.port);
        }
    }
    map
}

/// How many slots the map assigns. Overlaps cannot occur in one node's view.
pub(crate) fn covered(map: &SlotMap) -> u32 {
    map.keys().map(|&(start, end)| u32::from(end) - u32::from(start) + 1).sum()
}

/// The port serving `slot` in this map.
pub(crate) fn owner(map: &SlotMap, slot: u16) -> Option<u16> {
    map.iter().find(|((start, end), _)| (*start..=*end).contains(&slot)).map(|(_, &port)| port)
}

/// For each node, whether it is a master or whose replica it is (by port):
/// the rest of a view that must agree before a failover can be relied on.
pub(crate) fn roles(nodes: &[NodeLine]) -> BTreeMap<u16, Option<u16>> {
    let port_of: BTreeMap<&str, u16> =
        nodes.iter().map(|node| (node.id.as_str(), node.port)).collect();
    nodes
        .iter()
        .map(|node| {
            let master = match (&node.master_id, node.master) {
                (Some(id), false) => Some(port_of.get(id.as_str()).copied().unwrap_or(0)),
                _ => None,
            };
            (node.port, master)
        })
        .collect()
}

/// The `key:value` fields of an `INFO` or `CLUSTER INFO` reply.
pub(crate) fn info_fields(text: &str) -> BTreeMap<&str, &str> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once(':'))
        .collect()
}

/// What `INFO replication` says about one replica of a master
/// (`slave0:ip=127.0.0.1,port=31006,state=online,offset=560,lag=0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplicaLine {
    /// The replica's client port.
    pub(crate) port: u16,
    /// `online` once the initial sync is done.
    pub(crate) state: String,
    /// The replication offset it last acknowledged (about once a second).
    pub(crate) offset: u64,
}

/// The `slaveN:` lines of a master's `INFO replication`.
pub(crate) fn replicas(fields: &BTreeMap<&str, &str>) -> Result<Vec<ReplicaLine>, String> {
    let mut replicas = Vec::new();
    for (key, value) in fields {
        let Some(index) = key.strip_prefix("slave") else { continue };
        if index.parse::<u32>().is_err() {
            // slave_repl_offset, slave_priority and the like.
            continue;
        }
        let parts: BTreeMap<&str, &str> =
            value.split(',').filter_map(|part| part.split_once('=')).collect();
        let bad = || format!("bad replica line {key}:{value}");
        replicas.push(ReplicaLine {
            port: parts.get("port").and_then(|port| port.parse().ok()).ok_or_else(bad)?,
            state: parts.get("state").ok_or_else(bad)?.to_string(),
            offset: parts.get("offset").and_then(|offset| offset.parse().ok()).ok_or_else(bad)?,
        });
    }
    Ok(replicas)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEALTHY: &str = include_str!("fixtures/nodes_healthy.txt");
    const AFTER_FAILOVER: &str = include_str!("fixtures/nodes_after_failover.txt");
    const MASTER_INFO: &str = include_str!("fixtures/info_replication_master.txt");
    const REPLICA_INFO: &str = include_str!("fixtures/info_replication_replica.txt");

    fn parse(text: &str) -> Vec<NodeLine> {
        match parse_nodes(text) {
            Ok(nodes) => nodes,
            Err(e) => panic!("fixture did not parse: {e}"),
        }
    }

    #[test]
    fn a_healthy_view_covers_every_slot_with_three_masters() {
        let nodes = parse(HEALTHY);
        assert_eq!(nodes.len(), 6);
        let map = slot_map(&nodes);
        assert_eq!(covered(&map), SLOTS);
        assert_eq!(
            map.into_iter().collect::<Vec<_>>(),
            [((0, 5460), 31001), ((5461, 10922), 31004), ((10923, 16383), 31003)]
        );
        let me: Vec<_> = nodes.iter().filter(|node| node.myself).collect();
        assert_eq!(me.len(), 1);
        assert_eq!(me[0].port, 31003);
        assert!(nodes.iter().all(|node| !node.failed));
    }

    #[test]
    fn roles_name_each_replicas_master_by_port() {
        let roles = roles(&parse(HEALTHY));
        assert_eq!(
            roles.into_iter().collect::<Vec<_>>(),
            [
                (31001, None),
                (31002, Some(31004)),
                (31003, None),
                (31004, None),
                (31005, Some(31003)),
                (31006, Some(31001)),
            ]
        );
    }

    #[test]
    fn a_failed_master_keeps_its_flag_and_loses_its_slots() {
        let nodes = parse(AFTER_FAILOVER);
        let Some(dead) = nodes.iter().find(|node| node.port == 31002) else {
            panic!("31002 missing from the fixture");
        };
        assert!(dead.master && dead.failed && dead.slots.is_empty());
        let map = slot_map(&nodes);
        assert_eq!(owner(&map, 5461), Some(31004));
        assert_eq!(owner(&map, 12182), Some(31003));
        assert_eq!(owner(&map, 0), Some(31001));
        assert!(!map.values().any(|&port| port == 31002));
    }

    #[test]
    fn odd_lines_parse_or_are_refused() {
        let text = "07c3 127.0.0.1:7000@17000,host.example myself,master - 0 0 1 connected \
                    0-10 11 [12->-e7d1] [13-<-e7d1]\n\
                    e7d1 :0@0 slave,fail?,noaddr 07c3 0 0 1 disconnected\n";
        let nodes = parse(text);
        assert_eq!(nodes[0].port, 7000);
        assert_eq!(nodes[0].slots, [(0, 10), (11, 11)]);
        assert_eq!(nodes[1].port, 0);
        assert!(!nodes[1].failed, "fail? is a suspicion, not a verdict");
        assert_eq!(nodes[1].master_id.as_deref(), Some("07c3"));

        assert!(parse_nodes("07c3 127.0.0.1:7000@17000 master -").is_err());
        assert!(parse_nodes("07c3 127.0.0.1:x@17000 master - 0 0 1 connected").is_err());
        assert!(parse_nodes("07c3 127.0.0.1:7000@17000 master - 0 0 1 connected 9-2").is_err());
        assert!(parse_nodes("07c3 127.0.0.1:7000@17000 master - 0 0 1 connected 16384").is_err());
    }

    #[test]
    fn info_replication_of_a_master_and_a_replica() {
        let master = info_fields(MASTER_INFO);
        assert_eq!(master.get("role"), Some(&"master"));
        let Ok(lines) = replicas(&master) else { panic!("replica lines did not parse") };
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].port, 31005);
        assert_eq!(lines[0].state, "online");

        let replica = info_fields(REPLICA_INFO);
        assert_eq!(replica.get("role"), Some(&"slave"));
        assert_eq!(replica.get("master_port"), Some(&"31004"));
        assert_eq!(replica.get("master_link_status"), Some(&"up"));
        assert_eq!(replicas(&replica).map(|r| r.len()), Ok(0));
    }
}
