//! From row changes to Customer.io operations. Pure: no I/O.

pub mod value;
