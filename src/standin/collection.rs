//! One class's objects, in UUID order (the order batch delete takes them
//! in), with an index by file (`repo`, `path`) so a delete that names its
//! files looks at their objects only, as a real server's inverted index
//! lets it, instead of at every object of the class.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use uuid::Uuid;

use super::filter::FileSet;
use super::Stored;

#[derive(Debug, Default)]
pub(crate) struct Collection {
    objects: BTreeMap<Uuid, Stored>,
    /// repo → path → the ids of the objects with both, for every object
    /// whose `repo` and `path` are text.
    by_file: HashMap<String, HashMap<String, BTreeSet<Uuid>>>,
}

/// Reading goes straight to the map; writing goes through
/// [`Collection::insert`] and [`Collection::remove`], which keep the index.
impl std::ops::Deref for Collection {
    type Target = BTreeMap<Uuid, Stored>;
    fn deref(&self) -> &Self::Target {
        &self.objects
    }
}

impl<'a> IntoIterator for &'a Collection {
    type Item = (&'a Uuid, &'a Stored);
    type IntoIter = std::collections::btree_map::Iter<'a, Uuid, Stored>;
    fn into_iter(self) -> Self::IntoIter {
        self.objects.iter()
    }
}

fn file_of(o: &Stored) -> Option<(&str, &str)> {
    let text = |k: &str| o.properties.get(k).and_then(serde_json::Value::as_str);
    Some((text("repo")?, text("path")?))
}

impl Collection {
    pub fn insert(&mut self, id: Uuid, o: Stored) -> Option<Stored> {
        if let Some((repo, path)) = file_of(&o) {
            self.by_file
                .entry(repo.to_owned())
                .or_default()
                .entry(path.to_owned())
                .or_default()
                .insert(id);
        }
        let old = self.objects.insert(id, o)?;
        if let Some((repo, path)) = file_of(&old) {
            let same = self.objects.get(&id).and_then(file_of) == Some((repo, path));
            if !same {
                self.unindex(id, repo, path);
            }
        }
        Some(old)
    }

    pub fn remove(&mut self, id: &Uuid) -> Option<Stored> {
        let old = self.objects.remove(id)?;
        if let Some((repo, path)) = file_of(&old) {
            self.unindex(*id, repo, path);
        }
        Some(old)
    }

    fn unindex(&mut self, id: Uuid, repo: &str, path: &str) {
        let Some(paths) = self.by_file.get_mut(repo) else {
            return;
        };
        if let Some(ids) = paths.get_mut(path) {
            ids.remove(&id);
            if ids.is_empty() {
                paths.remove(path);
            }
        }
        if paths.is_empty() {
            self.by_file.remove(repo);
        }
    }

    /// The ids of the objects of `files` (paths by repo), in UUID order.
    pub fn ids_of_files(&self, files: &FileSet) -> BTreeSet<Uuid> {
        let mut out = BTreeSet::new();
        for (repo, paths) in files {
            let Some(have) = self.by_file.get(repo) else {
                continue;
            };
            for p in paths {
                if let Some(ids) = have.get(p) {
                    out.extend(ids.iter().copied());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(repo: &str, path: &str) -> Stored {
        let serde_json::Value::Object(properties) = json!({"repo": repo, "path": path}) else {
            unreachable!()
        };
        Stored {
            properties: std::sync::Arc::new(properties),
            created: 0,
            updated: 0,
        }
    }

    fn files(repo: &str, paths: &[&str]) -> FileSet {
        HashMap::from([(
            repo.to_owned(),
            paths.iter().map(|p| (*p).to_owned()).collect(),
        )])
    }

    #[test]
    fn the_index_follows_inserts_moves_and_removes() {
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let mut col = Collection::default();
        col.insert(a, stored("R", "x"));
        col.insert(b, stored("R", "x"));
        col.insert(c, stored("R", "y"));
        assert_eq!(
            col.ids_of_files(&files("R", &["x"])),
            BTreeSet::from([a, b])
        );
        // b moves to another file under the same id.
        col.insert(b, stored("R", "y"));
        assert_eq!(col.ids_of_files(&files("R", &["x"])), BTreeSet::from([a]));
        assert_eq!(
            col.ids_of_files(&files("R", &["y"])),
            BTreeSet::from([b, c])
        );
        col.remove(&a);
        assert!(col.ids_of_files(&files("R", &["x"])).is_empty());
        assert!(col.ids_of_files(&files("S", &["y"])).is_empty());
        assert_eq!(col.len(), 2);
        // Written again unchanged: still indexed once.
        col.insert(c, stored("R", "y"));
        assert_eq!(
            col.ids_of_files(&files("R", &["x", "y"])),
            BTreeSet::from([b, c])
        );
    }
}
