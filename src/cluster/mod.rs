//! Cluster mode: nodes coordinated by ZooKeeper that split and replicate
//! partitions and ask each other for the rest.

pub mod proxy;
