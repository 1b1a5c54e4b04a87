//! Struct member offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! aya-ebpf has no CO-RE relocations, and `struct file` or `struct linux_binprm` differ
//! between kernels (6.1 and 6.18 here), so the LSM programs read fields at offsets that the
//! supervisor looks up at load time and passes in as globals. aya parses BTF too, but keeps
//! struct members private; the format (Documentation/bpf/btf.rst) is small enough to walk.

use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("BTF: {0}")]
    Format(&'static str),
    #[error("BTF: struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
}

const MAGIC: u16 = 0xeb9f;

// BTF kinds (include/uapi/linux/btf.h).
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Debug)]
struct Member {
    name: u32,
    type_id: u32,
    /// Bits from the start of the struct.
    bit_offset: u32,
}

#[derive(Clone, Debug)]
struct Type {
    name: u32,
    kind: u32,
    /// The referenced type, for typedef/const/volatile/...
    type_id: u32,
    members: Vec<Member>,
}

/// The parsed type section.
pub struct Btf {
    /// Index = type id - 1.
    types: Vec<Type>,
    strings: Vec<u8>,
    structs: HashMap<String, u32>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, Error> {
    data.get(at..at + 4)
        .and_then(|bytes| bytes.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(Error::Format("truncated"))
}

impl Btf {
    /// The running kernel's BTF, unparsed.
    pub fn read_sys_fs() -> Result<Vec<u8>, Error> {
        let path = "/sys/kernel/btf/vmlinux";
        std::fs::read(path).map_err(|source| Error::Read { path: path.into(), source })
    }

    /// Parses little-endian BTF (the only kind x86_64 and aarch64 kernels produce).
    pub fn parse(data: &[u8]) -> Result<Btf, Error> {
        if data.get(0..2) != Some(&MAGIC.to_le_bytes()[..]) {
            return Err(Error::Format("not little-endian BTF (bad magic)"));
        }
        let header_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_data =
            data.get(header_len + type_off..header_len + type_off + type_len).ok_or(Error::Format("type section"))?;
        let strings =
            data.get(header_len + str_off..header_len + str_off + str_len).ok_or(Error::Format("string section"))?;

        let mut types = Vec::new();
        let mut at = 0;
        while at < types_data.len() {
            let name = u32_at(types_data, at)?;
            let info = u32_at(types_data, at + 4)?;
            let size_or_type = u32_at(types_data, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for index in 0..vlen {
                        let base = at + index * 12;
                        let offset = u32_at(types_data, base + 8)?;
                        members.push(Member {
                            name: u32_at(types_data, base)?,
                            type_id: u32_at(types_data, base + 4)?,
                            // With kind_flag, the high 8 bits are a bitfield size.
                            bit_offset: if kind_flag { offset & 0x00ff_ffff } else { offset },
                        });
                    }
                    12 * vlen
                }
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                _ => 0,
            };
            at += extra;
            types.push(Type { name, kind, type_id: size_or_type, members });
        }
        let mut btf = Btf { types, strings: strings.to_vec(), structs: HashMap::new() };
        for (index, ty) in btf.types.iter().enumerate() {
            if ty.kind == KIND_STRUCT && ty.name != 0 && !ty.members.is_empty() {
                let name = btf.string(ty.name).to_owned();
                btf.structs.entry(name).or_insert(index as u32 + 1);
            }
        }
        Ok(btf)
    }

    fn string(&self, offset: u32) -> &str {
        let tail = self.strings.get(offset as usize..).unwrap_or_default();
        let end = tail.iter().position(|byte| *byte == 0).unwrap_or(tail.len());
        std::str::from_utf8(&tail[..end]).unwrap_or("")
    }

    fn ty(&self, id: u32) -> Option<&Type> {
        id.checked_sub(1).and_then(|index| self.types.get(index as usize))
    }

    /// Follows typedef, const, volatile, restrict and type tags.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let ty = self.ty(id)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => id = ty.type_id,
                _ => return Some(ty),
            }
        }
        None
    }

    /// The byte offset of `member` in `struct strukt`, looking into anonymous structs and
    /// unions (the kernel groups fields in them, and moves fields into them between versions).
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, Error> {
        let no_member = || Error::NoMember { strukt: strukt.into(), member: member.into() };
        let id = *self.structs.get(strukt).ok_or_else(no_member)?;
        let ty = self.ty(id).ok_or_else(no_member)?;
        self.find(ty, member, 0).map(|bits| bits / 8).ok_or_else(no_member)
    }

    fn find(&self, ty: &Type, member: &str, base: u32) -> Option<u32> {
        for field in &ty.members {
            if field.name != 0 && self.string(field.name) == member {
                return Some(base + field.bit_offset);
            }
        }
        for field in ty.members.iter().filter(|field| field.name == 0) {
            if let Some(inner) = self.resolve(field.type_id)
                && (inner.kind == KIND_STRUCT || inner.kind == KIND_UNION)
                && let Some(found) = self.find(inner, member, base + field.bit_offset)
            {
                return Some(found);
            }
        }
        None
    }
}

/// The offsets the LSM programs (and `sched_process_exec`) read, by global name.
pub fn lsm_offsets(btf: &Btf) -> Result<Vec<(&'static str, u32)>, Error> {
    const FIELDS: [(&str, &str, &str); 24] = [
        ("LINUX_BINPRM_FILE", "linux_binprm", "file"),
        ("LINUX_BINPRM_FILENAME", "linux_binprm", "filename"),
        ("FILE_F_INODE", "file", "f_inode"),
        ("FILE_F_PATH", "file", "f_path"),
        ("FILE_F_FLAGS", "file", "f_flags"),
        ("INODE_I_INO", "inode", "i_ino"),
        ("INODE_I_SB", "inode", "i_sb"),
        ("SUPER_BLOCK_S_DEV", "super_block", "s_dev"),
        // The size of the file an exec runs (sched_process_exec).
        ("INODE_I_SIZE", "inode", "i_size"),
        // A socket's family and local port (socket_listen: is it bound yet?).
        ("SOCKET_SK", "socket", "sk"),
        ("SOCK_SK_COMMON", "sock", "__sk_common"),
        ("SOCK_COMMON_SKC_FAMILY", "sock_common", "skc_family"),
        ("SOCK_COMMON_SKC_NUM", "sock_common", "skc_num"),
        // The working directory of a task, walked up to the root for a relative open.
        ("TASK_STRUCT_FS", "task_struct", "fs"),
        ("FS_STRUCT_PWD", "fs_struct", "pwd"),
        ("PATH_MNT", "path", "mnt"),
        ("PATH_DENTRY", "path", "dentry"),
        ("DENTRY_D_PARENT", "dentry", "d_parent"),
        ("DENTRY_D_NAME", "dentry", "d_name"),
        ("QSTR_NAME", "qstr", "name"),
        ("VFSMOUNT_MNT_ROOT", "vfsmount", "mnt_root"),
        ("MOUNT_MNT", "mount", "mnt"),
        ("MOUNT_MNT_PARENT", "mount", "mnt_parent"),
        ("MOUNT_MNT_MOUNTPOINT", "mount", "mnt_mountpoint"),
    ];
    // A UNIX peer: the cgroup of whoever created it, the file it is bound to, and the
    // address it bound (unix_stream_connect, unix_may_send). Where one is missing they are
    // all left 0, and those hooks let every connect through, as before they existed (the
    // masks of the sockets bound at launch still hold).
    const UNIX_FIELDS: [(&str, &str, &str); 7] = [
        ("SOCK_SK_CGRP_DATA", "sock", "sk_cgrp_data"),
        ("CGROUP_KN", "cgroup", "kn"),
        ("KERNFS_NODE_ID", "kernfs_node", "id"),
        ("UNIX_SOCK_PATH", "unix_sock", "path"),
        ("UNIX_SOCK_ADDR", "unix_sock", "addr"),
        ("UNIX_ADDRESS_NAME", "unix_address", "name"),
        ("DENTRY_D_INODE", "dentry", "d_inode"),
    ];
    let mut offsets: Vec<(&'static str, u32)> = FIELDS
        .iter()
        .map(|(global, strukt, member)| Ok((*global, btf.member_offset(strukt, member)?)))
        .collect::<Result<_, Error>>()?;
    // The programs read `sock_cgroup_data` as its first member, the cgroup pointer.
    let unix: Option<Vec<_>> = (btf.member_offset("sock_cgroup_data", "cgroup").ok() == Some(0))
        .then(|| {
            UNIX_FIELDS
                .iter()
                .map(|(global, strukt, member)| Some((*global, btf.member_offset(strukt, member).ok()?)))
                .collect()
        })
        .flatten();
    offsets.extend(unix.unwrap_or_else(|| UNIX_FIELDS.iter().map(|(global, _, _)| (*global, 0)).collect()));
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A little BTF blob: `struct inner { int a; int b; }` and
    /// `struct outer { int x; union { struct inner in; int y; }; int z; }`.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0a\0b\0inner\0outer\0x\0in\0y\0z\0";
        let name = |text: &str| -> u32 {
            let needle = format!("\0{text}\0");
            strings.windows(needle.len()).position(|w| w == needle.as_bytes()).map_or(0, |p| p as u32 + 1)
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for word in words {
                types.extend_from_slice(&word.to_le_bytes());
            }
        };
        // 1: int (4 bytes)
        push(&[name("int"), KIND_INT << 24, 4, 32]);
        // 2: struct inner { int a @0; int b @32 bits; }
        push(&[name("inner"), (KIND_STRUCT << 24) | 2, 8, name("a"), 1, 0, name("b"), 1, 32]);
        // 3: anonymous union { struct inner in; int y; }
        push(&[0, (KIND_UNION << 24) | 2, 8, name("in"), 2, 0, name("y"), 1, 0]);
        // 4: struct outer { int x @0; union @64 bits; int z @128 bits; }
        push(&[name("outer"), (KIND_STRUCT << 24) | 3, 20, name("x"), 1, 0, 0, 3, 64, name("z"), 1, 128]);
        let mut data = Vec::new();
        data.extend_from_slice(&MAGIC.to_le_bytes());
        data.extend_from_slice(&[1, 0]);
        for word in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            data.extend_from_slice(&word.to_le_bytes());
        }
        data.extend_from_slice(&types);
        data.extend_from_slice(strings);
        data
    }

    #[test]
    fn member_offsets_include_anonymous_unions() {
        let btf = Btf::parse(&blob()).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(btf.member_offset("outer", "x").ok(), Some(0));
        assert_eq!(btf.member_offset("outer", "in").ok(), Some(8));
        assert_eq!(btf.member_offset("outer", "y").ok(), Some(8));
        assert_eq!(btf.member_offset("outer", "z").ok(), Some(16));
        assert_eq!(btf.member_offset("inner", "b").ok(), Some(4));
        assert!(btf.member_offset("outer", "nope").is_err_and(|e| e.to_string().contains("no member nope")));
    }

    #[test]
    fn the_running_kernel_has_every_offset_the_lsm_programs_need() {
        let Ok(btf) = Btf::read_sys_fs().and_then(|raw| Btf::parse(&raw)) else {
            println!("skipping the_running_kernel_has_every_offset_the_lsm_programs_need: no /sys/kernel/btf/vmlinux");
            return;
        };
        let offsets = lsm_offsets(&btf).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(offsets.len(), 31);
        let get = |name: &str| offsets.iter().find(|(global, _)| *global == name).map(|(_, off)| *off);
        // Three different fields of struct file, inside a struct file (a few hundred bytes).
        let file = [get("FILE_F_INODE"), get("FILE_F_PATH"), get("FILE_F_FLAGS")];
        assert!(file.iter().all(|off| off.is_some_and(|off| off < 512)), "{offsets:?}");
        assert!(file[0] != file[1] && file[1] != file[2] && file[0] != file[2], "{offsets:?}");
        // The inode's size is not its number or its superblock.
        let inode = [get("INODE_I_INO"), get("INODE_I_SB"), get("INODE_I_SIZE")];
        assert!(inode.iter().all(|off| off.is_some_and(|off| off < 1024)), "{offsets:?}");
        assert!(inode[2] != inode[0] && inode[2] != inode[1], "{offsets:?}");
        // A UNIX peer's bound file and address, deep inside struct unix_sock.
        let unix = [get("UNIX_SOCK_PATH"), get("UNIX_SOCK_ADDR")];
        assert!(unix.iter().all(|off| off.is_some_and(|off| off > 0 && off < 2048)), "{offsets:?}");
        println!("offsets on this kernel: {offsets:?}");
    }
}
