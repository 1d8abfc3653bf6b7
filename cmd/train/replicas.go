package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"

	"github.com/webdino/webdino/dist"
	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/gpu/lavapipe"
)

// checkReplicas validates the data-parallel flags.
func (o *options) checkReplicas() error {
	switch {
	case o.replicas < 1:
		return fmt.Errorf("--replicas %d: want at least 1", o.replicas)
	case o.rank < 0 || o.rank >= o.replicas:
		return fmt.Errorf("--rank %d: want a rank below --replicas %d", o.rank, o.replicas)
	case o.local == 0:
		o.local = o.replicas - o.rank
	}
	if o.local < 1 || o.rank+o.local > o.replicas {
		return fmt.Errorf("--local %d from --rank %d: ranks beyond --replicas %d", o.local, o.rank, o.replicas)
	}
	return nil
}

// sharedAdapters names what the local replicas share.
func sharedAdapters(pick bool, adapters int) string {
	if !pick {
		return "one adapter (" + gpu.AdapterEnv + " names it, or the machine has one)"
	}
	return fmt.Sprintf("%d adapters", adapters)
}

// selfCommand is the command line that starts this program again. Under
// scripts/lavapipe-exec (WEBDINO_EXEC), which starts a program through
// another glibc's dynamic loader, a child goes through the launcher too, so
// that a test binary's children run on the same libraries; a program
// restarted there by lavapipe.Restart starts its children as itself
// (lavapipe.Executable), and they restart there in turn.
func selfCommand() ([]string, error) {
	if launcher := os.Getenv("WEBDINO_EXEC"); launcher != "" {
		return []string{launcher, os.Args[0]}, nil
	}
	self, err := lavapipe.Executable()
	return []string{self}, err
}

// launchLocal starts the replicas after the first of this invocation as
// child processes (this binary with --rank r --local 1), each on an adapter
// of its own while there are enough (WEBDINO_ADAPTER, unless set). Their
// standard output is dropped (replica 0 reports) and their errors are
// forwarded, prefixed. finish returns once they have all exited; with
// failed (this process's replica failed, so theirs cannot go on: they may
// be waiting for it to join) it kills them first.
func launchLocal(o *options, stderr io.Writer) (finish func(failed bool) error, err error) {
	if o.local == 1 {
		return func(bool) error { return nil }, nil
	}
	self, err := selfCommand()
	if err != nil {
		return nil, fmt.Errorf("start replicas: %w", err)
	}
	adapters := len(gpu.Adapters())
	pick := os.Getenv(gpu.AdapterEnv) == "" && adapters > 1
	if pick && adapters < o.local || !pick {
		fmt.Fprintf(stderr, "train: %d replicas on this machine share %s: they take turns at it, so the run is no faster than with one replica per adapter\n",
			o.local, sharedAdapters(pick, adapters))
	}
	if pick {
		os.Setenv(gpu.AdapterEnv, "0")
	}
	var cmds []*exec.Cmd
	var wg sync.WaitGroup
	var mu sync.Mutex
	finish = func(failed bool) error {
		if failed {
			for _, cmd := range cmds {
				cmd.Process.Kill()
			}
		}
		wg.Wait()
		var errs []error
		for i, cmd := range cmds {
			if err := cmd.Wait(); err != nil && !failed {
				errs = append(errs, fmt.Errorf("replica %d: %w", o.rank+1+i, err))
			}
		}
		return errors.Join(errs...)
	}
	for i := 1; i < o.local; i++ {
		r := o.rank + i
		// A child hears Ctrl-C itself and stops with the others after the
		// same step.
		cmd := exec.Command(self[0], append(append(self[1:], o.args...), "--rank", strconv.Itoa(r), "--local", "1")...)
		cmd.Env = os.Environ()
		if pick {
			cmd.Env = append(cmd.Env, fmt.Sprintf("%s=%d", gpu.AdapterEnv, i%adapters))
		}
		pipe, err := cmd.StderrPipe()
		if err == nil {
			err = cmd.Start()
		}
		if err != nil {
			finish(true)
			return nil, fmt.Errorf("start replica %d: %w", r, err)
		}
		cmds = append(cmds, cmd)
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := bufio.NewScanner(pipe)
			for sc.Scan() {
				mu.Lock()
				fmt.Fprintf(stderr, "replica %d: %s\n", r, sc.Text())
				mu.Unlock()
			}
		}()
	}
	return finish, nil
}

// joinReplicas connects this process's replica to the others.
func joinReplicas(ctx context.Context, o *options, stdout io.Writer) (*dist.Group, error) {
	if o.replicas == 1 {
		return nil, nil
	}
	if o.rank == 0 {
		fmt.Fprintf(stdout, "waiting for %d replicas at %s\n", o.replicas, o.master)
	}
	g, err := dist.Join(ctx, dist.Options{Rank: o.rank, Size: o.replicas, Addr: o.master})
	if err != nil && o.rank == 0 && ctx.Err() == nil {
		return nil, fmt.Errorf("--master %s: %w (replica 0 listens there: give an address of this machine)", o.master, err)
	}
	if err != nil {
		return nil, fmt.Errorf("--master %s: %w", o.master, err)
	}
	return g, nil
}

// shard is replica rank's part of a data order: of every step's
// replicas*batch consecutive images, the rank-th run of batch. Only whole
// steps are dealt, so that every replica gets as many batches.
func shard(order []int, batch, rank, replicas int) []int {
	step := batch * replicas
	out := make([]int, 0, len(order)/replicas)
	for from := 0; from+step <= len(order); from += step {
		out = append(out, order[from+rank*batch:from+(rank+1)*batch]...)
	}
	return out
}

// interrupted reports whether the run stops after this step: Ctrl-C here,
// or with replicas on any of them, so that all stop (and save) after the
// same step.
func (s *session) interrupted(ctx context.Context) (bool, error) {
	stop := ctx.Err() != nil
	if s.group == nil {
		return stop, nil
	}
	v := []float32{0}
	if stop {
		v[0] = 1
	}
	if err := s.group.AllReduceMax(v); err != nil {
		return false, fmt.Errorf("agree on stopping: %w", err)
	}
	return v[0] > 0, nil
}

// gatherPositions collects every replica's data position, by rank.
func (s *session) gatherPositions() ([]dataPos, error) {
	all, err := s.group.AllGather(binary.AppendUvarint(binary.AppendUvarint(nil, uint64(s.pos.Epoch)), uint64(s.pos.Pos)))
	if err != nil {
		return nil, fmt.Errorf("gather data positions: %w", err)
	}
	pos := make([]dataPos, len(all))
	for r, b := range all {
		epoch, n := binary.Uvarint(b)
		at, m := binary.Uvarint(b[max(n, 0):])
		if n <= 0 || m <= 0 {
			return nil, fmt.Errorf("gather data positions: replica %d sent %d malformed bytes", r, len(b))
		}
		pos[r] = dataPos{Epoch: int(epoch), Pos: int(at)}
	}
	return pos, nil
}
