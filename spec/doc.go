// Package spec turns an image config, an app request and the pod it runs in
// into an OCI runtime spec (runtime-spec v1.3.0) that stage1-runc hands to
// libcontainer, and writes, reads and validates the resulting bundles.
//
// Everything but the bundle helpers, the Localhost seccomp loader and the
// device helpers is a pure function of its inputs: files of the image are read
// through an ImageFiles callback and host devices are passed in by the
// caller, so the whole package is testable without root.
//
// The defaults follow containerd's CRI plugin (capabilities, mounts, masked
// and read-only paths, the RuntimeDefault seccomp profile) so that workloads
// behave the same under runclet as under the runtimes Kubernetes users know;
// docs/spec.md lists them together with the rules Generate applies.
package spec
