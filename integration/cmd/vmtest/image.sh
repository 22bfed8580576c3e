#!/bin/sh
# Builds the vmtest guest: a Debian root with systemd as PID 1 and the
# packages runclet's tests need. Usage: image.sh MIRROR SUITE ROOTDIR
# Run as root. The caller turns ROOTDIR into an ext4 image and takes the
# kernel and initrd out of ROOTDIR/boot. Any change to this file changes
# the recipe hash and so rebuilds the cached image.
set -eu
mirror=$1 suite=$2 root=$3
# systemd/dbus: PID 1 and the bus libcontainer's systemd cgroup driver talks
# to. The rest is integration/scripts/setup.sh's runtime list (no compiler:
# binaries and test binaries are built on the host) and apparmor (Debian's
# kernel enables AppArmor, as on a real node) plus what the tests
# call: ip, iptables, CNI plugins, busybox for images, mount/nsenter.
pkgs=systemd,systemd-sysv,dbus,udev,kmod,linux-image-amd64,initramfs-tools,\
iproute2,iptables,containernetworking-plugins,busybox-static,ca-certificates,\
libseccomp2,apparmor,procps,util-linux,mount,e2fsprogs,less
# Two stages, so that the initramfs configuration is in place when the
# kernel package is configured: an initrd of the few modules this guest
# needs builds in seconds, one of "most" modules in minutes.
debootstrap --foreign --variant=minbase --include="$pkgs" "$suite" "$root" "$mirror"
mkdir -p "$root/etc/initramfs-tools/conf.d" "$root/usr/share/initramfs-tools/modules.d"
echo MODULES=list > "$root/etc/initramfs-tools/conf.d/vmtest.conf"
printf 'virtio_pci\nvirtio_blk\next4\n' > "$root/usr/share/initramfs-tools/modules.d/vmtest"
chroot "$root" /debootstrap/debootstrap --second-stage

# No network in the guest beyond what the tests create, no login prompts
# holding the console, a fixed hostname and an empty root password for
# debugging a kept image by hand.
echo vmtest > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 vmtest\n::1 localhost\n' > "$root/etc/hosts"
chroot "$root" passwd -d root
rm -f "$root/etc/machine-id" && touch "$root/etc/machine-id"
printf '/dev/vda / ext4 rw,relatime 0 1\ntmpfs /tmp tmpfs rw,nosuid,nodev,size=75%% 0 0\n' > "$root/etc/fstab"
# Accounting on for every unit, as kubeadm nodes run: every controller is
# enabled down the tree the way kubelet's systemd driver expects.
mkdir -p "$root/etc/systemd/system.conf.d"
cat > "$root/etc/systemd/system.conf.d/vmtest.conf" <<'CONF'
[Manager]
DefaultCPUAccounting=yes
DefaultMemoryAccounting=yes
DefaultTasksAccounting=yes
DefaultIOAccounting=yes
DefaultTimeoutStopSec=20s
CONF
# The test unit: mounts the host's shares, runs the run script, powers off.
cat > "$root/etc/systemd/system/vmtest.service" <<'UNIT'
[Unit]
Description=runclet vmtest
After=local-fs.target dbus.service systemd-udev-settle.service
Wants=dbus.service
[Service]
Type=oneshot
StandardOutput=journal+console
StandardError=journal+console
ExecStart=/usr/local/sbin/vmtest-run
ExecStopPost=/usr/bin/systemctl --no-block poweroff
TimeoutStartSec=infinity
[Install]
WantedBy=multi-user.target
UNIT
cat > "$root/usr/local/sbin/vmtest-run" <<'RUN'
#!/bin/sh
# /vmtest/in (read-only): binaries and run.sh, which writes its logs and
# exit-code to /vmtest/out. Everything else lives in run.sh, so that changing
# what the guest runs does not rebuild the image.
mkdir -p /vmtest/in /vmtest/out
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 vmin /vmtest/in
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 vmout /vmtest/out
sh /vmtest/in/run.sh
sync
RUN
chmod 0755 "$root/usr/local/sbin/vmtest-run"
chroot "$root" systemctl enable vmtest.service
chroot "$root" systemctl mask getty@tty1.service serial-getty@ttyS0.service \
	systemd-networkd.service systemd-timesyncd.service apt-daily.timer \
	apt-daily-upgrade.timer e2scrub_reap.service e2scrub_all.timer fstrim.timer man-db.timer 2>/dev/null || true
chroot "$root" apt-get clean
rm -rf "$root/var/lib/apt/lists/"* "$root/var/cache/apt/"*.bin
