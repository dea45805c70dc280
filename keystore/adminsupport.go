package keystore

import "time"

// Now returns the time on the store's clock (Options.Now, or time.Now).
// The admin API derives the status it shows with it, so that the status
// of a record agrees with ListKeys's status filter and with Verify, also
// when a test injects its own clock.
func (s *Store) Now() time.Time { return s.now() }
