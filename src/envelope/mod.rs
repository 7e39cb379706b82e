//! The envelope around encoded bytes: compression, encryption and splitting into parts with a manifest,
//! applied on write in the order encode → compress → encrypt → split, and undone on read.

pub mod split;
