//! The lab scaled out (issue 15): the PVA and the RO as several `tresor serve` instances
//! each, sharing the stores of a private PostgreSQL server the lab starts
//! (`storage::pg_server`), behind one round-robin front per role ([`crate::front`]) on the
//! address the other roles and the devices know. The operators stay one process each.
//!
//! What a deployment with a load balancer looks like, on one machine: any instance takes
//! any request, so one device's steps are served by both.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use storage::pg_server::{Durability, PgServer};
use tokio::net::TcpListener;

use crate::front::{Front, FrontOptions, Running};

/// How the lab keeps the PVA's and the RO's stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// One SQLite file per role (one instance each).
    Sqlite,
    /// One PostgreSQL database per role, on a private server the lab starts.
    Postgres,
}

/// SQLite, unless `TRESOR_LAB_DATABASE=postgres`: the end-to-end suites built on the lab run
/// against either backend that way (`make test` runs them on both).
impl Default for Backend {
    fn default() -> Self {
        match std::env::var("TRESOR_LAB_DATABASE").as_deref() {
            Ok("postgres") => Self::Postgres,
            _ => Self::Sqlite,
        }
    }
}

/// The parts of a scaled-out lab: the database server, the instances' listeners until their
/// processes take the ports, and the fronts.
pub struct ScaleOut {
    postgres: Option<PgServer>,
    pva_database: Option<String>,
    ro_database: Option<String>,
    instances: Vec<Instance>,
    fronts: Vec<Running>,
}

/// One instance of a role: its name (`pva-1`), its address, and the listener that holds
/// its port until its process takes it.
struct Instance {
    role: &'static str,
    name: String,
    addr: SocketAddr,
    reserved: Option<TcpListener>,
}

impl ScaleOut {
    /// Starts the database server (for [`Backend::Postgres`]) and reserves the ports of
    /// `instances` instances of the PVA and of the RO (none for one instance: the role
    /// listens on its public port itself).
    pub async fn prepare(instances: usize, backend: Backend) -> Result<Self> {
        anyhow::ensure!(
            instances <= 1 || backend == Backend::Postgres,
            "several instances of a role share a PostgreSQL store (--database postgres)"
        );
        let (postgres, pva_database, ro_database) = match backend {
            Backend::Sqlite => (None, None, None),
            Backend::Postgres => {
                let server =
                    tokio::task::spawn_blocking(|| PgServer::start_with(Durability::Durable))
                        .await?
                        .context("starting PostgreSQL (make deps installs it)")?;
                let pva = server.create_database("pva")?;
                let ro = server.create_database("ro")?;
                (Some(server), Some(pva), Some(ro))
            }
        };
        let mut reserved = Vec::new();
        if instances > 1 {
            for role in ["pva", "ro"] {
                for n in 1..=instances {
                    let listener = transport::bind("127.0.0.1:0").await?;
                    reserved.push(Instance {
                        role,
                        name: format!("{role}-{n}"),
                        addr: listener.local_addr()?,
                        reserved: Some(listener),
                    });
                }
            }
        }
        Ok(Self { postgres, pva_database, ro_database, instances: reserved, fronts: Vec::new() })
    }

    /// The PVA's database URL, on PostgreSQL.
    pub fn pva_database(&self) -> Option<&str> {
        self.pva_database.as_deref()
    }

    /// The RO's database URL, on PostgreSQL.
    pub fn ro_database(&self) -> Option<&str> {
        self.ro_database.as_deref()
    }

    /// Whether the roles run as several instances behind fronts.
    pub fn scaled(&self) -> bool {
        !self.instances.is_empty()
    }

    /// The instances of `role` (`pva`, `ro`): their names and ports.
    pub fn instances(&self, role: &str) -> Vec<(String, u16)> {
        self.instances
            .iter()
            .filter(|i| i.role == role)
            .map(|i| (i.name.clone(), i.addr.port()))
            .collect()
    }

    /// Releases the instances' ports for their processes.
    pub fn release_instance_ports(&mut self) {
        self.instances.iter_mut().for_each(|i| drop(i.reserved.take()));
    }

    /// Starts the front of `role` on `public`, the role's port, round robin over the
    /// role's instances.
    pub fn start_front(&mut self, role: &str, public: TcpListener) -> Result<()> {
        let backends: Vec<SocketAddr> =
            self.instances.iter().filter(|i| i.role == role).map(|i| i.addr).collect();
        let front = Front::on(public, backends, FrontOptions::default())
            .with_context(|| format!("the {role} front"))?;
        self.fronts.push(front.spawn());
        Ok(())
    }

    /// The fronts' figures: (role's backend address, connections handed).
    pub fn front_stats(&self) -> Vec<(SocketAddr, u64)> {
        self.fronts.iter().flat_map(|f| f.stats()).map(|s| (s.addr, s.handed)).collect()
    }

    /// The database server, while the lab runs.
    pub fn postgres(&self) -> Option<&PgServer> {
        self.postgres.as_ref()
    }

    pub fn postgres_mut(&mut self) -> Option<&mut PgServer> {
        self.postgres.as_mut()
    }
}
