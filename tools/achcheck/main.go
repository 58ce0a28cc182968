// achcheck reads each NACHA file named on the command line with moov-io/ach and validates it;
// it prints one line per file and exits 1 when any file fails.
package main

import (
	"fmt"
	"os"

	"github.com/moov-io/ach"
)

func main() {
	failed := false
	for _, path := range os.Args[1:] {
		f, err := os.Open(path)
		if err != nil {
			fmt.Printf("%s: %v\n", path, err)
			failed = true
			continue
		}
		file, err := ach.NewReader(f).Read()
		f.Close()
		if err == nil {
			err = file.Validate()
		}
		if err != nil {
			fmt.Printf("%s: INVALID: %v\n", path, err)
			failed = true
			continue
		}
		entries, prenotes, changes, returns := 0, 0, 0, 0
		for _, b := range file.Batches {
			for _, e := range b.GetEntries() {
				entries++
				if e.TransactionCode == 28 || e.TransactionCode == 38 {
					prenotes++
				}
				if e.Addenda98 != nil {
					changes++
				}
				if e.Addenda99 != nil {
					returns++
				}
			}
		}
		fmt.Printf("%s: OK batches=%d entries=%d prenotes=%d changes=%d returns=%d\n",
			path, len(file.Batches), entries, prenotes, changes, returns)
	}
	if failed {
		os.Exit(1)
	}
}
