package daemon

import (
	"fmt"

	"ikegw/store"
)

// loadPreviousKeys reads the previous key files of a rotation (field names
// the configuration key for errors). The caller clears the keys when done.
func loadPreviousKeys(field string, files []string) ([][]byte, error) {
	var keys [][]byte
	for i, f := range files {
		k, err := store.LoadClusterKey(f)
		if err != nil {
			for _, k := range keys {
				clear(k)
			}
			return nil, fmt.Errorf("%s[%d]: %w", field, i, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}
