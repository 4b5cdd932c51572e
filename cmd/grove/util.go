package main

import "encoding/json"

// jsonRaw embeds a stored JSON document as is.
func jsonRaw(s string) json.RawMessage { return json.RawMessage(s) }
