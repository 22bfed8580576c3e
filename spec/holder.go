package spec

// holderLeaf names the cgroup leaf of a pod's shared pid namespace
// holder. App IDs are hex, so it cannot collide with an app's leaf.
const holderLeaf = "pidns-holder"

// HolderCgroupsPath is the OCI cgroupsPath of the leaf the pod's pid
// namespace holder is moved into: beside the apps' leaves under the
// pod's cgroup parent.
func HolderCgroupsPath(pod Pod) (string, error) {
	return cgroupsPath(App{ID: holderLeaf}, pod)
}
