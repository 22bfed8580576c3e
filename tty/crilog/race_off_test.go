//go:build !race

package crilog

const raceEnabled = false
