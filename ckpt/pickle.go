package ckpt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// A restricted pickle reader: it interprets the opcodes PyTorch's
// torch.save emits (protocol 2, plus the few protocol 3-4 additions) into
// plain values, and never calls anything. The only globals it accepts are the
// ones needed to rebuild tensors; any other global fails with its name.

type (
	pyGlobal struct{ module, name string }
	pyTuple  []any
	pyList   struct{ items []any }
	pyDict   struct{ items []pyItem } // insertion order, as Python keeps it
	pyItem   struct{ key, value any }
	pyNone   struct{}
	pyMark   struct{}

	// storageRef is a persistent id: a typed storage saved as its own zip entry.
	storageRef struct {
		dtype string // "f32", "f16", "bf16", or the torch name of an unsupported type
		key   string // entry name under data/
		numel int64
	}
	// tensorRef is a strided view of a storage.
	tensorRef struct {
		storage        *storageRef
		offset         int64
		size, stride   []int64
		requiresGrad   bool
		fromParameters bool
	}
)

// storageTypes maps the storage globals to element types; unsupported ones
// are still accepted so that checkpoints holding integer tensors (step
// counters) load, and fail only when such a tensor is used as a weight.
var storageTypes = map[string]string{
	"FloatStorage": "f32", "HalfStorage": "f16", "BFloat16Storage": "bf16",
	"DoubleStorage": "float64", "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
	"CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
}

func allowedGlobal(g pyGlobal) bool {
	switch g.module + "." + g.name {
	case "collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
		"torch._utils._rebuild_parameter_with_state":
		return true
	}
	_, ok := storageTypes[g.name]
	return ok && g.module == "torch"
}

// unpickle runs the opcodes in p and returns the pickled value.
func unpickle(p []byte) (any, error) {
	var (
		stack []any
		marks []int
		memo  = map[uint32]any{}
		pos   int
	)
	fail := func(format string, args ...any) error {
		return fmt.Errorf("pickle byte %d: %s", pos, fmt.Sprintf(format, args...))
	}
	need := func(n int) ([]byte, error) {
		if n < 0 || n > len(p)-pos {
			return nil, fail("%d bytes wanted, %d remain", n, len(p)-pos)
		}
		b := p[pos : pos+n]
		pos += n
		return b, nil
	}
	pop := func() (any, error) {
		if len(stack) == 0 || (len(marks) > 0 && len(stack) == marks[len(marks)-1]) {
			return nil, fail("stack underflow")
		}
		v := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		return v, nil
	}
	popMark := func() ([]any, error) {
		if len(marks) == 0 {
			return nil, fail("no mark")
		}
		m := marks[len(marks)-1]
		marks = marks[:len(marks)-1]
		items := append([]any(nil), stack[m:]...)
		stack = stack[:m]
		return items, nil
	}
	top := func() (any, error) {
		if len(stack) == 0 {
			return nil, fail("empty stack")
		}
		return stack[len(stack)-1], nil
	}
	readLine := func() (string, error) {
		for i := pos; i < len(p); i++ {
			if p[i] == '\n' {
				s := string(p[pos:i])
				pos = i + 1
				return s, nil
			}
		}
		return "", fail("unterminated line")
	}
	for {
		if pos >= len(p) {
			return nil, fail("no STOP opcode")
		}
		op := p[pos]
		pos++
		var (
			b   []byte
			err error
		)
		switch op {
		case 0x80: // PROTO
			if b, err = need(1); err == nil && b[0] > 5 {
				err = fail("pickle protocol %d", b[0])
			}
		case 0x95: // FRAME: an 8-byte length; the frame's bytes simply follow
			_, err = need(8)
		case '.': // STOP
			v, err := pop()
			return v, err
		case '(':
			marks = append(marks, len(stack))
		case '0': // POP
			_, err = pop()
		case '1': // POP_MARK
			_, err = popMark()
		case '2': // DUP
			var v any
			if v, err = top(); err == nil {
				stack = append(stack, v)
			}
		case 'N':
			stack = append(stack, pyNone{})
		case 0x88:
			stack = append(stack, true)
		case 0x89:
			stack = append(stack, false)
		case 'K': // BININT1
			if b, err = need(1); err == nil {
				stack = append(stack, int64(b[0]))
			}
		case 'M': // BININT2
			if b, err = need(2); err == nil {
				stack = append(stack, int64(binary.LittleEndian.Uint16(b)))
			}
		case 'J': // BININT
			if b, err = need(4); err == nil {
				stack = append(stack, int64(int32(binary.LittleEndian.Uint32(b))))
			}
		case 0x8a: // LONG1: little-endian two's complement of n bytes
			if b, err = need(1); err == nil {
				if b, err = need(int(b[0])); err == nil {
					if len(b) > 8 {
						err = fail("integer of %d bytes", len(b))
						break
					}
					var v uint64
					for i := len(b) - 1; i >= 0; i-- {
						v = v<<8 | uint64(b[i])
					}
					if n := len(b); n > 0 && n < 8 && b[n-1]&0x80 != 0 {
						v |= ^uint64(0) << (8 * n)
					}
					stack = append(stack, int64(v))
				}
			}
		case 'G': // BINFLOAT, big-endian
			if b, err = need(8); err == nil {
				stack = append(stack, math.Float64frombits(binary.BigEndian.Uint64(b)))
			}
		case 'X', 0x8c, 0x8d, 'B', 'C', 'T', 'U': // unicode and byte strings
			var n int
			switch op {
			case 'X', 'B', 'T':
				if b, err = need(4); err == nil {
					n = int(binary.LittleEndian.Uint32(b))
				}
			case 0x8c, 'C', 'U':
				if b, err = need(1); err == nil {
					n = int(b[0])
				}
			case 0x8d:
				if b, err = need(8); err == nil {
					v := binary.LittleEndian.Uint64(b)
					n = -1
					if v <= uint64(len(p)) {
						n = int(v)
					}
				}
			}
			if err == nil {
				if b, err = need(n); err == nil {
					if op == 'B' || op == 'C' {
						stack = append(stack, append([]byte(nil), b...))
					} else {
						stack = append(stack, string(b))
					}
				}
			}
		case ')':
			stack = append(stack, pyTuple{})
		case 't':
			var items []any
			if items, err = popMark(); err == nil {
				stack = append(stack, pyTuple(items))
			}
		case 0x85, 0x86, 0x87: // TUPLE1..3
			n := int(op - 0x84)
			if len(stack) < n || (len(marks) > 0 && len(stack)-n < marks[len(marks)-1]) {
				err = fail("stack underflow")
				break
			}
			t := append(pyTuple(nil), stack[len(stack)-n:]...)
			stack = append(stack[:len(stack)-n], t)
		case ']':
			stack = append(stack, &pyList{})
		case '}':
			stack = append(stack, &pyDict{})
		case 'q', 'r': // BINPUT, LONG_BINPUT
			var idx uint32
			if op == 'q' {
				if b, err = need(1); err == nil {
					idx = uint32(b[0])
				}
			} else if b, err = need(4); err == nil {
				idx = binary.LittleEndian.Uint32(b)
			}
			if err == nil {
				var v any
				if v, err = top(); err == nil {
					memo[idx] = v
				}
			}
		case 0x94: // MEMOIZE
			var v any
			if v, err = top(); err == nil {
				memo[uint32(len(memo))] = v
			}
		case 'h', 'j': // BINGET, LONG_BINGET
			var idx uint32
			if op == 'h' {
				if b, err = need(1); err == nil {
					idx = uint32(b[0])
				}
			} else if b, err = need(4); err == nil {
				idx = binary.LittleEndian.Uint32(b)
			}
			if err == nil {
				v, ok := memo[idx]
				if !ok {
					err = fail("memo %d is empty", idx)
					break
				}
				stack = append(stack, v)
			}
		case 'c': // GLOBAL "module\nname\n"
			var mod, name string
			if mod, err = readLine(); err == nil {
				if name, err = readLine(); err == nil {
					err = pushGlobal(&stack, pyGlobal{mod, name}, fail)
				}
			}
		case 0x93: // STACK_GLOBAL
			var n, m any
			if n, err = pop(); err == nil {
				if m, err = pop(); err == nil {
					mod, ok1 := m.(string)
					name, ok2 := n.(string)
					if !ok1 || !ok2 {
						err = fail("STACK_GLOBAL of non-strings")
						break
					}
					err = pushGlobal(&stack, pyGlobal{mod, name}, fail)
				}
			}
		case 'Q': // BINPERSID
			var id any
			if id, err = pop(); err == nil {
				var s *storageRef
				if s, err = persistentStorage(id); err == nil {
					stack = append(stack, s)
				}
			}
		case 'R': // REDUCE
			var args, fn any
			if args, err = pop(); err == nil {
				if fn, err = pop(); err == nil {
					var v any
					if v, err = call(fn, args); err == nil {
						stack = append(stack, v)
					}
				}
			}
		case 'b': // BUILD: state for the object below; only dict attributes (_metadata) occur
			var state, obj any
			if state, err = pop(); err == nil {
				if obj, err = top(); err == nil {
					if _, ok := obj.(*pyDict); !ok {
						err = fail("BUILD on %T", obj)
					}
					_ = state
				}
			}
		case 's', 'u': // SETITEM, SETITEMS
			var kv []any
			if op == 's' {
				var k, v any
				if v, err = pop(); err == nil {
					if k, err = pop(); err == nil {
						kv = []any{k, v}
					}
				}
			} else {
				kv, err = popMark()
			}
			if err != nil {
				break
			}
			var obj any
			if obj, err = top(); err != nil {
				break
			}
			d, ok := obj.(*pyDict)
			if !ok || len(kv)%2 != 0 {
				err = fail("SETITEM on %T with %d values", obj, len(kv))
				break
			}
			for i := 0; i < len(kv); i += 2 {
				d.items = append(d.items, pyItem{kv[i], kv[i+1]})
			}
		case 'a', 'e': // APPEND, APPENDS
			var items []any
			if op == 'a' {
				var v any
				if v, err = pop(); err == nil {
					items = []any{v}
				}
			} else {
				items, err = popMark()
			}
			if err != nil {
				break
			}
			var obj any
			if obj, err = top(); err != nil {
				break
			}
			l, ok := obj.(*pyList)
			if !ok {
				err = fail("APPEND on %T", obj)
				break
			}
			l.items = append(l.items, items...)
		default:
			err = fail("unsupported pickle opcode 0x%02x", op)
		}
		if err != nil {
			return nil, err
		}
	}
}

func pushGlobal(stack *[]any, g pyGlobal, fail func(string, ...any) error) error {
	if !allowedGlobal(g) {
		return fail("refusing pickle global %s.%s: only tensor-rebuilding globals are allowed (is this a PyTorch state dict?)", g.module, g.name)
	}
	*stack = append(*stack, g)
	return nil
}

// persistentStorage decodes torch's persistent id
// ('storage', <Storage global>, key, location, numel).
func persistentStorage(id any) (*storageRef, error) {
	t, ok := id.(pyTuple)
	if !ok || len(t) != 5 || t[0] != "storage" {
		return nil, fmt.Errorf("persistent id %v is not a torch storage", id)
	}
	g, ok1 := t[1].(pyGlobal)
	key, ok2 := t[2].(string)
	numel, ok3 := t[4].(int64)
	if !ok1 || !ok2 || !ok3 || numel < 0 {
		return nil, errors.New("malformed torch storage id")
	}
	return &storageRef{dtype: storageTypes[g.name], key: key, numel: numel}, nil
}

// call applies one of the allowed globals.
func call(fn, args any) (any, error) {
	g, ok := fn.(pyGlobal)
	a, ok2 := args.(pyTuple)
	if !ok || !ok2 {
		return nil, fmt.Errorf("REDUCE of %T with %T", fn, args)
	}
	switch g.name {
	case "OrderedDict":
		if len(a) != 0 {
			return nil, errors.New("OrderedDict with arguments")
		}
		return &pyDict{}, nil
	case "_rebuild_tensor_v2":
		// (storage, offset, size, stride, requires_grad, backward_hooks[, metadata])
		if len(a) < 6 {
			return nil, fmt.Errorf("_rebuild_tensor_v2 with %d arguments", len(a))
		}
		s, ok1 := a[0].(*storageRef)
		off, ok2 := a[1].(int64)
		size, ok3 := intTuple(a[2])
		stride, ok4 := intTuple(a[3])
		if !ok1 || !ok2 || !ok3 || !ok4 || len(size) != len(stride) {
			return nil, errors.New("malformed _rebuild_tensor_v2 arguments")
		}
		return &tensorRef{storage: s, offset: off, size: size, stride: stride}, nil
	case "_rebuild_parameter", "_rebuild_parameter_with_state":
		if len(a) < 3 {
			return nil, fmt.Errorf("%s with %d arguments", g.name, len(a))
		}
		t, ok := a[0].(*tensorRef)
		if !ok {
			return nil, fmt.Errorf("%s of %T", g.name, a[0])
		}
		p := *t
		p.fromParameters = true
		return &p, nil
	}
	return nil, fmt.Errorf("pickle global %s.%s is not callable", g.module, g.name)
}

func intTuple(v any) ([]int64, bool) {
	t, ok := v.(pyTuple)
	if !ok {
		return nil, false
	}
	out := make([]int64, len(t))
	for i, x := range t {
		if out[i], ok = x.(int64); !ok {
			return nil, false
		}
	}
	return out, true
}

// flattenTensors collects the tensors of nested dicts (and lists) under
// dotted names: {"teacher": {"backbone.x": t}} gives "teacher.backbone.x".
// Other values are skipped. Memo references can make a dict contain itself
// or share sub-dicts exponentially often, so the walk refuses cycles, deep
// nesting, and more visits than budget.
func flattenTensors(root any, budget int) (map[string]*tensorRef, error) {
	out := map[string]*tensorRef{}
	onPath := map[any]bool{}
	var walk func(v any, prefix string, depth int) error
	walk = func(v any, prefix string, depth int) error {
		if budget--; budget < 0 {
			return errors.New("pickle holds too many shared references")
		}
		if depth > 32 {
			return errors.New("pickle nests deeper than 32 levels")
		}
		join := func(k string) string {
			if prefix == "" {
				return k
			}
			return prefix + "." + k
		}
		switch x := v.(type) {
		case *tensorRef:
			if _, dup := out[prefix]; dup {
				return fmt.Errorf("tensor %.80q appears twice", prefix)
			}
			out[prefix] = x
		case *pyDict, *pyList:
			if onPath[x] {
				return errors.New("pickle holds a container that contains itself")
			}
			onPath[x] = true
			defer delete(onPath, x)
			if d, ok := x.(*pyDict); ok {
				for _, it := range d.items {
					var k string
					switch key := it.key.(type) {
					case string:
						k = key
					case int64:
						k = fmt.Sprint(key)
					default:
						continue
					}
					if err := walk(it.value, join(k), depth+1); err != nil {
						return err
					}
				}
			} else {
				for i, it := range x.(*pyList).items {
					if err := walk(it, join(fmt.Sprint(i)), depth+1); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	return out, walk(root, "", 0)
}
