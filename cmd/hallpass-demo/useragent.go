package main

import "strings"

// parseUserAgent names the browser and operating system a User-Agent
// header describes, roughly, for the devices page: "Firefox" and "Linux",
// say, or "Other". It only labels devices for their owner; it decides
// nothing.
func parseUserAgent(ua string) (browser, os string) {
	return firstMatch(ua, browserMarkers), firstMatch(ua, osMarkers)
}

type uaMarker struct{ marker, name string }

// Order matters: Edge and Opera also say Chrome; Chrome also says Safari.
var browserMarkers = []uaMarker{
	{"Edg/", "Edge"}, {"EdgA/", "Edge"}, {"EdgiOS/", "Edge"},
	{"OPR/", "Opera"},
	{"Firefox/", "Firefox"}, {"FxiOS/", "Firefox"},
	{"Chrome/", "Chrome"}, {"CriOS/", "Chrome"}, {"Chromium/", "Chrome"},
	{"Safari/", "Safari"},
}

// Order matters: iOS says "like Mac OS X", Android and ChromeOS say Linux.
// An iPad asking for desktop sites says Macintosh and shows as macOS.
var osMarkers = []uaMarker{
	{"Windows", "Windows"},
	{"iPhone", "iOS"}, {"iPad", "iOS"}, {"iPod", "iOS"},
	{"Android", "Android"},
	{"CrOS", "ChromeOS"},
	{"Macintosh", "macOS"}, {"Mac OS X", "macOS"},
	{"Linux", "Linux"}, {"X11", "Linux"},
}

func firstMatch(ua string, markers []uaMarker) string {
	for _, m := range markers {
		if strings.Contains(ua, m.marker) {
			return m.name
		}
	}
	return "Other"
}
