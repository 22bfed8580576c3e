package integration

import (
	"io"
	"net"
	"time"
)

func netListen(network, addr string) (net.Listener, error) { return net.Listen(network, addr) }

// dialRead connects, reads until EOF or one second, and returns what came.
func dialRead(addr string) string {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	b, _ := io.ReadAll(c)
	return string(b)
}
