package leb128

import (
	"bytes"
	"math"
	"testing"
)

func TestAppend(t *testing.T) {
	for _, tt := range []struct {
		v    uint64
		want []byte
	}{
		{0, []byte{0x00}},
		{127, []byte{0x7f}},
		{128, []byte{0x80, 0x01}},
		{624485, []byte{0xe5, 0x8e, 0x26}},
		{math.MaxUint32, []byte{0xff, 0xff, 0xff, 0xff, 0x0f}},
	} {
		if got := AppendUint([]byte{0xaa}, tt.v); !bytes.Equal(got, append([]byte{0xaa}, tt.want...)) {
			t.Errorf("AppendUint(%d) = %x, want aa%x", tt.v, got, tt.want)
		}
	}
	for _, tt := range []struct {
		v    int64
		want []byte
	}{
		{0, []byte{0x00}},
		{63, []byte{0x3f}},
		{64, []byte{0xc0, 0x00}},
		{-1, []byte{0x7f}},
		{-64, []byte{0x40}},
		{-65, []byte{0xbf, 0x7f}},
		{-123456, []byte{0xc0, 0xbb, 0x78}},
		{math.MinInt64, []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x7f}},
	} {
		if got := AppendInt(nil, tt.v); !bytes.Equal(got, tt.want) {
			t.Errorf("AppendInt(%d) = %x, want %x", tt.v, got, tt.want)
		}
	}
}
