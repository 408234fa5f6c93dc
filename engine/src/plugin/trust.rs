//! Which plugin libraries buslink agrees to load. It often runs as root, and loading a library
//! runs its code: a library (or its directory) that another user can change would let that
//! user run code as buslink. So a library is loaded only when it and its directory are not
//! writable by others, nor by a group other than the owner's own user private group (umask
//! 002 systems make those), and both belong to root or to the user buslink runs as;
//! `allow_insecure_plugins = true` (top level of the config) loads it anyway, with a warning.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Why `path` (a library) could be changed by someone else, or `None` when it cannot.
pub(super) fn insecure(path: &Path) -> Option<String> {
    let library = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let dir = library.parent().map(Path::to_path_buf);
    for (what, file) in [("library", Some(library.clone())), ("its directory", dir)] {
        let Some(file) = file else { continue };
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        let mode = meta.mode();
        // Group-writable is harmless when the group is the owner's own (a user private group,
        // as umask 002 distributions make: nobody else is in it).
        let group_risk = mode & 0o020 != 0 && !is_private_group(meta.uid(), meta.gid());
        if mode & 0o002 != 0 || group_risk {
            return Some(format!(
                "{what} {} is writable by {} (mode {:o})",
                file.display(),
                if mode & 0o002 != 0 {
                    "every user"
                } else {
                    "its group"
                },
                mode & 0o7777
            ));
        }
        if meta.uid() != 0 && meta.uid() != me {
            return Some(format!(
                "{what} {} belongs to user {}, neither root nor the user buslink runs as ({me})",
                file.display(),
                meta.uid()
            ));
        }
    }
    None
}

/// Whether `gid` is the user private group of `uid`: the user's primary group, named like the
/// user, with no other members listed.
fn is_private_group(uid: u32, gid: u32) -> bool {
    use std::ffi::CStr;
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: getpwuid_r and getgrgid_r write only into the structs and the buffer given, whose
    // sizes are passed; the strings read are the NUL-terminated ones they stored there.
    unsafe {
        let mut user: libc::passwd = std::mem::zeroed();
        let mut found = std::ptr::null_mut();
        if libc::getpwuid_r(
            uid,
            &mut user,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        ) != 0
            || found.is_null()
            || user.pw_gid != gid
        {
            return false;
        }
        let user_name = CStr::from_ptr(user.pw_name).to_bytes().to_vec();
        let mut group: libc::group = std::mem::zeroed();
        let mut found = std::ptr::null_mut();
        if libc::getgrgid_r(
            gid,
            &mut group,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        ) != 0
            || found.is_null()
        {
            return false;
        }
        let mut members = group.gr_mem;
        let no_others = members.is_null() || {
            let mut only_owner = true;
            while !(*members).is_null() {
                if CStr::from_ptr(*members).to_bytes() != user_name.as_slice() {
                    only_owner = false;
                }
                members = members.add(1);
            }
            only_owner
        };
        CStr::from_ptr(group.gr_name).to_bytes() == user_name.as_slice() && no_others
    }
}
