#![allow(dead_code)]
pub mod gitrepo;
pub mod model;
