//! Durable stores shared by the network roles (DESIGN.md §5). For now, one policy: how a
//! role opens its SQLite store.
//!
//! A store is refused, never silently replaced: a role starts only on a store that is its
//! own — stamped with its role name and of its schema version — and creates a store only
//! where no file exists (or, with [`OpenMode::Init`], in an existing *empty* file the
//! operator named explicitly). An empty file where a store should be usually means the
//! store was lost; treating it as a fresh store once made MNO-B re-issue IMSIs that were
//! live on cards, and the RO forget its campaigns.
//!
//! Layout:
//! - `sqlite`: [`open_sqlite`] and its variants, [`Schema`], [`OpenMode`], [`OpenError`],
//!   and [`check_sqlite`], which judges a store the same way without writing to it.
//! - `private`: state directories 0700 and files 0600 ([`private_dir`], [`private_file`]).

#![forbid(unsafe_code)]

mod private;
mod sqlite;

pub use private::{DIR_MODE, FILE_MODE, private_dir, private_file, private_files_in};
pub use sqlite::{
    OpenError, OpenMode, STAMP_TABLE, Schema, StoreCheck, check_sqlite, open_sqlite,
    open_sqlite_in_memory, open_sqlite_with,
};
