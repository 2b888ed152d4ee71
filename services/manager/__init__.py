"""The xdpguard node CLI (load/unload/add/del/list/monitor/analyze/train/topics)."""
