//! Pure functions of cluster membership: which partitions of a new version
//! a node builds, and which shard ID a node without one takes.
//!
//! Both are sequins' algorithms exactly (including sorting shard IDs as
//! strings), so that a sequinsfs node and the vectors of sequins' tests
//! agree on who holds what. No I/O here: the coordinator supplies the peer
//! list and replica counts.

use std::collections::{BTreeMap, BTreeSet};

/// A shard ID that is not an integer, met while choosing one automatically.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shard ID {id:?} is not an integer, so no shard ID can be chosen automatically")]
pub struct NonIntegerShardId {
    pub id: String,
}

/// The partitions of a version with `num_partitions` partitions that the
/// node with shard ID `own_id` builds, given the shard IDs of the other
/// nodes it knows (duplicates allowed: equal IDs get equal partition sets).
///
/// sequins: list `[0]*R + [1]*R + ... + [N-1]*R`, sort the unique IDs (peers
/// plus self) as strings, and give element `i` to ID index `i mod #IDs`.
pub fn assign_partitions<'a>(
    num_partitions: u32,
    replication: usize,
    peer_ids: impl IntoIterator<Item = &'a str>,
    own_id: &'a str,
) -> BTreeSet<u32> {
    let ids: BTreeSet<&str> = peer_ids
        .into_iter()
        .chain(std::iter::once(own_id))
        .collect();
    // BTreeSet<&str> iterates in byte order, which is Go's string order.
    let own_index = ids
        .iter()
        .position(|id| *id == own_id)
        .expect("own ID was inserted");
    let replication = replication.max(1);
    (0..num_partitions as usize * replication)
        .filter(|i| i % ids.len() == own_index)
        .map(|i| (i / replication) as u32)
        .collect()
}

/// sequins' `max_replication` filter: with `max_replication >= replication`
/// (0 or smaller values disable it), drops every selected partition that
/// already has `max_replication` or more replicas elsewhere.
/// `remote_replicas` maps a partition to the number of other nodes
/// advertising it; absent means none.
pub fn apply_max_replication(
    selected: BTreeSet<u32>,
    remote_replicas: &BTreeMap<u32, usize>,
    replication: usize,
    max_replication: usize,
) -> BTreeSet<u32> {
    if max_replication == 0 || max_replication < replication {
        return selected;
    }
    selected
        .into_iter()
        .filter(|p| remote_replicas.get(p).copied().unwrap_or(0) < max_replication)
        .collect()
}

/// The smallest positive integer that is not one of `taken` (the shard IDs
/// of the nodes present). IDs are 1-based. An ID that is not an integer is
/// an error (as in sequins): a cluster mixing named and numbered nodes must
/// number them by hand.
pub fn smallest_available_shard_id<'a>(
    taken: impl IntoIterator<Item = &'a str>,
) -> Result<u64, NonIntegerShardId> {
    let mut used = BTreeSet::new();
    for id in taken {
        // Go's strconv.Atoi: an optional sign, decimal digits, 64 bits.
        let n: i64 = id
            .parse()
            .map_err(|_| NonIntegerShardId { id: id.to_string() })?;
        if n > 0 {
            used.insert(n as u64);
        }
    }
    // At most `used.len()` values are taken, so this ends within len + 1.
    Ok((1..)
        .find(|n| !used.contains(n))
        .expect("an unused ID exists"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[u32]) -> BTreeSet<u32> {
        items.iter().copied().collect()
    }

    fn assign(n: u32, r: usize, all: &[&str], own: &str) -> BTreeSet<u32> {
        assign_partitions(n, r, all.iter().copied().filter(|id| *id != own), own)
    }

    #[test]
    fn sequins_assignment_vectors() {
        // N=5, R=3, IDs 1..5.
        let ids = ["1", "2", "3", "4", "5"];
        let expected = [
            ("1", set(&[0, 1, 3])),
            ("2", set(&[0, 2, 3])),
            ("3", set(&[0, 2, 4])),
            ("4", set(&[1, 2, 4])),
            ("5", set(&[1, 3, 4])),
        ];
        for (id, partitions) in &expected {
            assert_eq!(&assign(5, 3, &ids, id), partitions, "node {id}");
        }
        // A sixth node joining gets {1,3} for v1 (the others keep theirs,
        // computed when v1 was created); for v2 everyone is reassigned.
        let six = ["1", "2", "3", "4", "5", "6"];
        assert_eq!(assign(5, 3, &six, "6"), set(&[1, 3]));
        for id in ["1", "2", "3"] {
            assert_eq!(assign(5, 3, &six, id), set(&[0, 2, 4]), "v2 node {id}");
        }
        for id in ["4", "5", "6"] {
            assert_eq!(assign(5, 3, &six, id), set(&[1, 3]), "v2 node {id}");
        }
    }

    #[test]
    fn ids_sort_as_strings() {
        // "10" < "2": node 10 has index 1 of ["1", "10", "2"].
        let ids = ["1", "2", "10"];
        assert_eq!(assign(3, 1, &ids, "10"), set(&[1]));
        assert_eq!(assign(3, 1, &ids, "2"), set(&[2]));
    }

    #[test]
    fn equal_ids_get_equal_partitions() {
        let alone = assign_partitions(4, 2, ["2"], "1");
        assert_eq!(assign_partitions(4, 2, ["1", "2", "1"], "1"), alone);
        // A single node holds everything.
        assert_eq!(assign_partitions(4, 2, [], "x"), set(&[0, 1, 2, 3]));
        assert!(assign_partitions(0, 2, [], "x").is_empty());
    }

    #[test]
    fn max_replication_vectors() {
        // R=2, max 2, 5 partitions, four nodes: node 3's share is {1,3},
        // and both already have two remote replicas, so it builds nothing;
        // node 4 without max_replication builds its share, {1,3}.
        let ids = ["1", "2", "3", "4"];
        let remote: BTreeMap<u32, usize> = (0..5).map(|p| (p, 2)).collect();
        let three = assign(5, 2, &ids, "3");
        assert_eq!(three, set(&[1, 3]));
        assert!(apply_max_replication(three, &remote, 2, 2).is_empty());
        let four = assign(5, 2, &ids, "4");
        assert_eq!(apply_max_replication(four, &remote, 2, 0), set(&[1, 3]));
        // A node alone takes everything; with max 2 and one remote replica
        // each nothing is dropped.
        let alone = assign(5, 2, &["1"], "1");
        assert_eq!(alone, set(&[0, 1, 2, 3, 4]));
        let one: BTreeMap<u32, usize> = (0..5).map(|p| (p, 1)).collect();
        assert_eq!(apply_max_replication(alone.clone(), &one, 2, 2), alone);
        // Below replication the setting is ignored, as in sequins.
        assert_eq!(apply_max_replication(alone.clone(), &remote, 3, 2), alone);
        // Partitions without any remote replica are kept.
        let partial: BTreeMap<u32, usize> = [(0, 3)].into();
        assert_eq!(
            apply_max_replication(alone, &partial, 2, 3),
            set(&[1, 2, 3, 4])
        );
    }

    #[test]
    fn sequins_shard_id_vectors() {
        let cases: [(&[&str], u64); 5] = [
            (&["2", "4"], 1),
            (&["1", "3"], 2),
            (&["1", "2"], 3),
            (&["1", "4", "5"], 2),
            (&[], 1),
        ];
        for (taken, expected) in cases {
            assert_eq!(
                smallest_available_shard_id(taken.iter().copied()),
                Ok(expected),
                "{taken:?}"
            );
        }
    }

    #[test]
    fn shard_id_edge_cases() {
        assert_eq!(
            smallest_available_shard_id(["1", "x"]),
            Err(NonIntegerShardId { id: "x".into() })
        );
        assert!(smallest_available_shard_id(["99999999999999999999"]).is_err());
        assert!(smallest_available_shard_id([""]).is_err());
        // Non-positive and duplicate IDs block nothing; Atoi-style signs
        // and leading zeros are numbers.
        assert_eq!(smallest_available_shard_id(["0", "-1", "1", "1"]), Ok(2));
        assert_eq!(smallest_available_shard_id(["+1", "02"]), Ok(3));
        // Huge IDs are fine and do not make the search long.
        assert_eq!(smallest_available_shard_id(["9223372036854775807"]), Ok(1));
    }
}
