//! Offsets of the kernel struct fields the LSM programs read. aya-ebpf has no CO-RE, and
//! these structs differ between kernels, so the supervisor reads the running kernel's BTF
//! and writes the offsets here at load time (`EbpfLoader::override_global`). A zero left
//! here means "not set", and the programs treat it as an internal error.

#[unsafe(no_mangle)]
static LINUX_BINPRM_FILE: u32 = 0;
#[unsafe(no_mangle)]
static LINUX_BINPRM_FILENAME: u32 = 0;
#[unsafe(no_mangle)]
static FILE_F_INODE: u32 = 0;
#[unsafe(no_mangle)]
static FILE_F_PATH: u32 = 0;
#[unsafe(no_mangle)]
static FILE_F_FLAGS: u32 = 0;
#[unsafe(no_mangle)]
static INODE_I_INO: u32 = 0;
#[unsafe(no_mangle)]
static INODE_I_SB: u32 = 0;
#[unsafe(no_mangle)]
static SUPER_BLOCK_S_DEV: u32 = 0;
#[unsafe(no_mangle)]
static INODE_I_SIZE: u32 = 0;

#[unsafe(no_mangle)]
static SOCKET_SK: u32 = 0;
#[unsafe(no_mangle)]
static SOCK_SK_COMMON: u32 = 0;
#[unsafe(no_mangle)]
static SOCK_COMMON_SKC_FAMILY: u32 = 0;
#[unsafe(no_mangle)]
static SOCK_COMMON_SKC_NUM: u32 = 0;

#[unsafe(no_mangle)]
static TASK_STRUCT_FS: u32 = 0;
#[unsafe(no_mangle)]
static FS_STRUCT_PWD: u32 = 0;
#[unsafe(no_mangle)]
static PATH_MNT: u32 = 0;
#[unsafe(no_mangle)]
static PATH_DENTRY: u32 = 0;
#[unsafe(no_mangle)]
static DENTRY_D_PARENT: u32 = 0;
#[unsafe(no_mangle)]
static DENTRY_D_NAME: u32 = 0;
#[unsafe(no_mangle)]
static QSTR_NAME: u32 = 0;
#[unsafe(no_mangle)]
static VFSMOUNT_MNT_ROOT: u32 = 0;
#[unsafe(no_mangle)]
static MOUNT_MNT: u32 = 0;
#[unsafe(no_mangle)]
static MOUNT_MNT_PARENT: u32 = 0;
#[unsafe(no_mangle)]
static MOUNT_MNT_MOUNTPOINT: u32 = 0;

#[unsafe(no_mangle)]
static SOCK_SK_CGRP_DATA: u32 = 0;
#[unsafe(no_mangle)]
static CGROUP_KN: u32 = 0;
#[unsafe(no_mangle)]
static KERNFS_NODE_ID: u32 = 0;
#[unsafe(no_mangle)]
static UNIX_SOCK_PATH: u32 = 0;
#[unsafe(no_mangle)]
static UNIX_SOCK_ADDR: u32 = 0;
#[unsafe(no_mangle)]
static UNIX_ADDRESS_NAME: u32 = 0;
#[unsafe(no_mangle)]
static DENTRY_D_INODE: u32 = 0;

/// Reads a load-time global. `read_volatile`, or the compiler would fold in the zero above.
macro_rules! global {
    ($name:ident) => {
        // SAFETY: a plain u32 in the object's read-only data.
        unsafe { core::ptr::read_volatile(&$name) as usize }
    };
}

#[inline(always)]
pub fn binprm_file() -> usize {
    global!(LINUX_BINPRM_FILE)
}
#[inline(always)]
pub fn binprm_filename() -> usize {
    global!(LINUX_BINPRM_FILENAME)
}
#[inline(always)]
pub fn file_inode() -> usize {
    global!(FILE_F_INODE)
}
#[inline(always)]
pub fn file_path() -> usize {
    global!(FILE_F_PATH)
}
#[inline(always)]
pub fn file_flags() -> usize {
    global!(FILE_F_FLAGS)
}
#[inline(always)]
pub fn inode_ino() -> usize {
    global!(INODE_I_INO)
}
#[inline(always)]
pub fn inode_sb() -> usize {
    global!(INODE_I_SB)
}
#[inline(always)]
pub fn sb_dev() -> usize {
    global!(SUPER_BLOCK_S_DEV)
}
#[inline(always)]
pub fn inode_size() -> usize {
    global!(INODE_I_SIZE)
}

#[inline(always)]
pub fn socket_sk() -> usize {
    global!(SOCKET_SK)
}
#[inline(always)]
pub fn sock_common() -> usize {
    global!(SOCK_SK_COMMON)
}
#[inline(always)]
pub fn skc_family() -> usize {
    global!(SOCK_COMMON_SKC_FAMILY)
}
#[inline(always)]
pub fn skc_num() -> usize {
    global!(SOCK_COMMON_SKC_NUM)
}

#[inline(always)]
pub fn task_fs() -> usize {
    global!(TASK_STRUCT_FS)
}
#[inline(always)]
pub fn fs_pwd() -> usize {
    global!(FS_STRUCT_PWD)
}
#[inline(always)]
pub fn path_mnt() -> usize {
    global!(PATH_MNT)
}
#[inline(always)]
pub fn path_dentry() -> usize {
    global!(PATH_DENTRY)
}
#[inline(always)]
pub fn dentry_parent() -> usize {
    global!(DENTRY_D_PARENT)
}
#[inline(always)]
pub fn dentry_name() -> usize {
    global!(DENTRY_D_NAME)
}
#[inline(always)]
pub fn qstr_name() -> usize {
    global!(QSTR_NAME)
}
#[inline(always)]
pub fn vfsmount_root() -> usize {
    global!(VFSMOUNT_MNT_ROOT)
}
#[inline(always)]
pub fn mount_mnt() -> usize {
    global!(MOUNT_MNT)
}
#[inline(always)]
pub fn mount_parent() -> usize {
    global!(MOUNT_MNT_PARENT)
}
#[inline(always)]
pub fn mount_mountpoint() -> usize {
    global!(MOUNT_MNT_MOUNTPOINT)
}

/// `sock.sk_cgrp_data`, whose first member is the cgroup pointer (the supervisor checks).
#[inline(always)]
pub fn sk_cgrp_data() -> usize {
    global!(SOCK_SK_CGRP_DATA)
}
#[inline(always)]
pub fn cgroup_kn() -> usize {
    global!(CGROUP_KN)
}
#[inline(always)]
pub fn kernfs_node_id() -> usize {
    global!(KERNFS_NODE_ID)
}
#[inline(always)]
pub fn unix_sock_path() -> usize {
    global!(UNIX_SOCK_PATH)
}
#[inline(always)]
pub fn unix_sock_addr() -> usize {
    global!(UNIX_SOCK_ADDR)
}
#[inline(always)]
pub fn unix_address_name() -> usize {
    global!(UNIX_ADDRESS_NAME)
}
#[inline(always)]
pub fn dentry_inode() -> usize {
    global!(DENTRY_D_INODE)
}
