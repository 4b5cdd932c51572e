package store

import "testing"

func TestRebind(t *testing.T) {
	for in, want := range map[string]string{
		`SELECT 1`:                                  `SELECT 1`,
		`a = ? AND b = ?`:                           `a = $1 AND b = $2`,
		`a = ?1 OR b = ?1 AND c = ?2`:               `a = $1 OR b = $1 AND c = $2`,
		`x = '?' AND y = ? AND "q?" = ?`:            `x = '?' AND y = $1 AND "q?" = $2`,
		`VALUES(?,?,?) ON CONFLICT DO NOTHING`:      `VALUES($1,$2,$3) ON CONFLICT DO NOTHING`,
		`state_at = CASE WHEN state = ? THEN ? END`: `state_at = CASE WHEN state = $1 THEN $2 END`,
	} {
		if got := rebind(in); got != want {
			t.Errorf("rebind(%q) = %q, want %q", in, got, want)
		}
	}
}
