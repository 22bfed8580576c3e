package cri

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/runclet/runclet/internal/errdefs"
	"github.com/runclet/runclet/runtime/image"
)

// An image's ID is its config digest; every CRI field that names an
// image by ID (Image.id, Container.image_id, ContainerStatus.image_id,
// PullImageResponse.image_ref) carries exactly that string.

// imageUser is the USER of an image's config, as the CRI shows it.
type imageUser struct {
	uid      *runtimeapi.Int64Value
	username string
}

// parseImageUser splits an image USER ("name", "uid", "name:group",
// "uid:gid"): a numeric user is a uid, anything else a user name.
func parseImageUser(user string) imageUser {
	u, _, _ := strings.Cut(user, ":")
	if u == "" {
		return imageUser{}
	}
	if n, err := strconv.ParseInt(u, 10, 64); err == nil && n >= 0 {
		return imageUser{uid: &runtimeapi.Int64Value{Value: n}}
	}
	return imageUser{username: u}
}

// userOf reads (once per image: configs never change) the image's user.
func (s *Server) userOf(img image.Image) imageUser {
	if u, ok := s.imageUsers.Load(img.ID); ok {
		return u.(imageUser)
	}
	cfg, err := s.rt.ImageConfig(img)
	if err != nil {
		return imageUser{}
	}
	u := parseImageUser(cfg.Config.User)
	s.imageUsers.Store(img.ID, u)
	return u
}

func (s *Server) criImage(img image.Image) *runtimeapi.Image {
	u := s.userOf(img)
	return &runtimeapi.Image{
		Id: img.ID.String(), RepoTags: img.RepoTags, RepoDigests: img.RepoDigests,
		Size: uint64(max(img.Size, 1)), Uid: u.uid, Username: u.username,
		Spec: &runtimeapi.ImageSpec{Image: img.ID.String()},
	}
}

func (s *Server) listImages(f *runtimeapi.ImageFilter) ([]*runtimeapi.Image, error) {
	if ref := f.GetImage().GetImage(); ref != "" {
		if err := validateImageName(ref); err != nil {
			return nil, err
		}
		img, err := s.rt.GetImage(ref)
		if errdefs.IsNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return []*runtimeapi.Image{s.criImage(img)}, nil
	}
	imgs, err := s.rt.ListImages()
	if err != nil {
		return nil, err
	}
	out := make([]*runtimeapi.Image, 0, len(imgs))
	for _, img := range imgs {
		out = append(out, s.criImage(img))
	}
	return out, nil
}

// ListImages lists the stored images, or the one the filter names.
func (s *Server) ListImages(ctx context.Context, req *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	imgs, err := s.listImages(req.GetFilter())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ListImagesResponse{Images: imgs}, nil
}

// StreamImages is ListImages in chunks.
func (s *Server) StreamImages(req *runtimeapi.StreamImagesRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamImagesResponse]) error {
	imgs, err := s.listImages(req.GetFilter())
	if err != nil {
		return err
	}
	return sendChunks(imgs, func(items []*runtimeapi.Image) error {
		return stream.Send(&runtimeapi.StreamImagesResponse{Images: items})
	})
}

// ImageStatus describes one image; an image that is not stored is an
// empty response, not an error.
func (s *Server) ImageStatus(ctx context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	ref := req.GetImage().GetImage()
	if err := validateImageName(ref); err != nil {
		return nil, err
	}
	img, err := s.rt.GetImage(ref)
	if errdefs.IsNotFound(err) {
		return &runtimeapi.ImageStatusResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ImageStatusResponse{Image: s.criImage(img)}
	if req.Verbose {
		cfg, err := s.rt.ImageConfig(img)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(map[string]any{"image": img, "config": cfg})
		if err != nil {
			return nil, err
		}
		resp.Info = map[string]string{"info": string(b)}
	}
	return resp, nil
}

// authConfig turns kubelet's credentials into the image store's: user
// and password, or "auth" (base64 of user:password), or tokens. No
// credentials means the node's own (~/.docker/config.json).
func authConfig(a *runtimeapi.AuthConfig) (*authn.AuthConfig, error) {
	if a == nil {
		return nil, nil
	}
	out := &authn.AuthConfig{
		Username: a.Username, Password: a.Password,
		IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken,
	}
	if a.Auth != "" {
		dec, err := base64.StdEncoding.DecodeString(a.Auth)
		if err != nil {
			return nil, invalid("auth: not base64: %v", err)
		}
		user, pass, ok := strings.Cut(string(dec), ":")
		if !ok {
			return nil, invalid("auth: want base64 of user:password")
		}
		out.Username, out.Password = user, pass
	}
	if *out == (authn.AuthConfig{}) {
		return nil, nil
	}
	return out, nil
}

// PullImage pulls an image and returns its ID.
func (s *Server) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	ref := req.GetImage().GetImage()
	if err := validateImageName(ref); err != nil {
		return nil, err
	}
	if _, err := image.ParseReference(ref); err != nil {
		return nil, err
	}
	auth, err := authConfig(req.GetAuth())
	if err != nil {
		return nil, err
	}
	img, err := s.rt.PullImage(ctx, ref, auth)
	if err != nil {
		return nil, err
	}
	logger(ctx).Info("image pulled", "ref", ref, "id", img.ID.String())
	return &runtimeapi.PullImageResponse{ImageRef: img.ID.String()}, nil
}

// RemoveImage removes an image, named by a reference or its ID, with all
// its names; an image that is not stored is success. An image that
// containers use is removed too, as containerd does (kubelet decides what
// goes): image GC keeps the layers they stack until they are removed.
func (s *Server) RemoveImage(ctx context.Context, req *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	ref := req.GetImage().GetImage()
	if err := validateImageName(ref); err != nil {
		return nil, err
	}
	img, err := s.rt.GetImage(ref)
	if errdefs.IsNotFound(err) {
		return &runtimeapi.RemoveImageResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	if err := s.rt.RemoveImage(img.ID.String()); err != nil && !errdefs.IsNotFound(err) {
		return nil, err
	}
	s.imageUsers.Delete(img.ID)
	return &runtimeapi.RemoveImageResponse{}, nil
}

// ImageFsInfo reports the image store's usage (from sizes recorded when
// layers were unpacked: no tree walk).
func (s *Server) ImageFsInfo(ctx context.Context, _ *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	mountpoint, u, err := s.rt.ImageFsInfo()
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ImageFsInfoResponse{ImageFilesystems: []*runtimeapi.FilesystemUsage{{
		Timestamp:  time.Now().UnixNano(),
		FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: mountpoint},
		UsedBytes:  &runtimeapi.UInt64Value{Value: uint64(max(u.Bytes, 0))},
		InodesUsed: &runtimeapi.UInt64Value{Value: uint64(max(u.Inodes, 0))},
	}}}, nil
}
