module quantfleet.dev/services

go 1.26.0

require (
	quantfleet.dev/libs v0.0.0
	quantfleet.dev/proto v0.0.0
)

replace (
	quantfleet.dev/libs => ../libs
	quantfleet.dev/proto => ../proto
)
