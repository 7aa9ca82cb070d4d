"""The end-to-end jobs: quantize (measure → search → calibrate → save), evaluate, inspect, demo."""
