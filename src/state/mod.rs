//! The daemon's files in its state directory: the desired state and image-change journals
//! (`store`), the image-change history (`history`), and the one way they are written
//! (`fsutil`: write, fsync, rename).

pub mod fsutil;
pub mod history;
pub mod store;
