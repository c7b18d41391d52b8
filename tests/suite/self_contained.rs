//! The repository must be all a user needs: no file of the project may read or name a folder
//! outside it (the development workspace keeps a sibling folder of shared material that a clone
//! does not have). The forbidden path is assembled at run time so this file does not name it.

use std::path::{Path, PathBuf};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name == "target" || name == ".git" || name.starts_with("__pycache__") {
            continue;
        }
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn no_project_file_names_a_folder_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let forbidden = format!("..{}{}", '/', ["sha", "red"].concat());
    let mut files = Vec::new();
    walk(root, &mut files);
    assert!(files.len() > 20, "walked only {} files", files.len());
    let offenders: Vec<String> = files
        .iter()
        .filter(|p| {
            std::fs::read(p)
                .map(|b| String::from_utf8_lossy(&b).contains(&forbidden))
                .unwrap_or(false)
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "files naming {forbidden}: {offenders:?}"
    );
}
