// Command curate builds a training set from an uncurated image pool the way
// DINOv2 built LVD-142M: embed, deduplicate, retrieve.
//
//	curate embed    --model M --out POOL [--source NAME] INPUT...
//	curate dedup    --pool POOL [--eval EVAL]... --out DIR
//	curate retrieve --pool POOL --dedup DIR/dedup.jsonl --curated CUR... --out DIR
//	curate calibrate --model M --out DIR (--fashion-mnist | INPUT...)
//
// Run 'curate <command> --help' for the inputs, outputs and flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"syscall"

	"github.com/webdino/webdino/gpu/lavapipe"
)

func main() {
	if err := lavapipe.Restart(); err != nil {
		fmt.Fprintln(os.Stderr, "curate:", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first Ctrl-C stops cleanly (embed keeps what it finished); a
	// second one kills the process as usual.
	go func() {
		<-ctx.Done()
		stop()
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: curate <command> [flags]

Data curation as in DINOv2 (LVD-142M), on image embeddings compared by
cosine similarity:

  embed     embed image pools (folders, files, list files) into sharded
            .npy embedding files with an id manifest; resumable
  dedup     self-deduplication of a pool (k nearest neighbours, similarity
            above a threshold links copies, one image kept per connected
            component) and relative deduplication against evaluation sets;
            writes dedup.jsonl and a report (counts, similarity histogram,
            duplicate-group pictures)
  retrieve  retrieval of deduplicated pool images near curated sets, by
            sample (k nearest per curated image) or by cluster (k-means);
            writes the final manifest.jsonl a trainer reads
  calibrate plants edited copies (crops, flips, jitter, JPEG) among a
            sample of your images and reports dedup's precision and recall
            at each threshold, to choose dedup's --threshold

Run 'curate <command> --help' for the flags of a command.
`

// commands are the subcommands.
var commands = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) error{
	"embed":     embedCmd,
	"dedup":     dedupCmd,
	"retrieve":  retrieveCmd,
	"calibrate": calibrateCmd,
}

// errUsage reports a usage problem already printed.
var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "curate: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	err := cmd(ctx, args[1:], stdout, stderr)
	switch {
	case err == nil || errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	case errors.Is(err, context.Canceled):
		fmt.Fprintf(stderr, "curate %s: interrupted\n", args[0])
		return 130
	}
	fmt.Fprintf(stderr, "curate %s: %v\n", args[0], err)
	return 1
}

// flags makes a flag set whose usage prints text and the defaults.
func flags(name, text string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, text)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args; a flag error becomes errUsage (already printed).
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	return nil
}

// usageErr prints a usage problem and returns errUsage.
func usageErr(stderr io.Writer, cmd, format string, a ...any) error {
	fmt.Fprintf(stderr, "curate %s: %s (see --help)\n", cmd, fmt.Sprintf(format, a...))
	return errUsage
}

// multi is a repeatable string flag.
type multi []string

func (m *multi) String() string     { return fmt.Sprint(*m) }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

// newShuffle is the generator of the command's random choices.
func newShuffle(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 1)) }
