//! A `PATH` in which one program cannot be found: a temporary directory of links to every
//! other program of this process's `PATH`, so a child proves it works without that program
//! (e.g. the native backend without `nft`) while everything else it may run is still there.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub struct PathWithout {
    dir: PathBuf,
}

impl PathWithout {
    pub fn new(program: &str) -> PathWithout {
        let dir = std::env::temp_dir().join(format!(
            "meshinit-path-without-{program}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = std::env::var_os("PATH").unwrap_or_default();
        for searched in std::env::split_paths(&path) {
            let Ok(entries) = std::fs::read_dir(&searched) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let link = dir.join(&name);
                // The first directory of PATH that holds a name wins, as for a search.
                if name != program && !link.exists() && link.symlink_metadata().is_err() {
                    let _ = std::os::unix::fs::symlink(entry.path(), &link);
                }
            }
        }
        let without = PathWithout { dir };
        assert!(
            which_in(program, &without.path_env()).is_none(),
            "{program} is still found"
        );
        without
    }

    /// The value to give a child as `PATH`.
    pub fn path_env(&self) -> OsString {
        self.dir.clone().into_os_string()
    }
}

impl Drop for PathWithout {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where `program` is found in `path`, if anywhere.
pub fn which_in(program: &str, path: &OsString) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|candidate| Path::new(candidate).exists())
}
