//! The crate's only I/O: reading ServiceEntries, WorkloadEntries and DestinationRules from
//! files and directories. The reading itself is the policy crate's ([`trustmesh_policy::load`]:
//! `.yaml`/`.yml`/`.json`, sorted, hidden entries skipped, sizes bounded), so one folder serves
//! both and a file that one reader takes the other takes too.

use std::path::PathBuf;

use trustmesh_policy::load::{read_paths, ReadError};
use trustmesh_policy::MeshConfig;

use crate::options::Options;
use crate::registry::Registry;
use crate::report::Report;

impl Registry {
    /// Reads files and directories and builds the registry. Only unreadable input is an error;
    /// every problem with the resources is in the report.
    pub fn load(
        paths: &[PathBuf],
        mesh: &MeshConfig,
        options: &Options,
    ) -> Result<(Registry, Report), ReadError> {
        let sources = read_paths(paths)?;
        Ok(Registry::from_sources(&sources, mesh, options))
    }
}
