//! SONiC's contracts around the databases: `config_db.json` files (`configdb`), the FEATURE
//! table's rules (`feature`, pure), and the daemon's database link (`dblink`), the adapter
//! that carries out the supervisor's database requests and feeds it what CONFIG_DB, APPL_DB
//! and STATE_DB say.

pub mod configdb;
pub mod dblink;
pub mod factory;
pub mod feature;
