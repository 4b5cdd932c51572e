package jobs

import (
	"net"
	"os"
	"testing"
)

// readPorts sees a listener and a connection on its port, and the
// listening socket's inode is held by this process.
func TestReadPortsSeesListenerAndConnection(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	use, err := readPorts(port, port)
	if err != nil {
		t.Fatal(err)
	}
	if use[port] == nil || len(use[port].Listen) != 1 || use[port].Conns != 0 {
		t.Fatalf("before a connection: %+v", use[port])
	}
	if portFree(port) {
		t.Fatal("a port with a listener is free")
	}
	found := false
	for _, ino := range socketInodes(os.Getpid()) {
		if ino == use[port].Listen[0] {
			found = true
		}
	}
	if !found {
		t.Fatal("listener inode not among this process's sockets")
	}
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if use, err = readPorts(port, port); err != nil || use[port].Conns != 2 { // both ends are here
		t.Fatalf("with a connection: %+v %v", use[port], err)
	}
	l.Close()
	a.Close()
	c.Close()
	if !portFree(port) {
		t.Fatal("a closed port is not free")
	}
}
