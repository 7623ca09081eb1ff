from magicvideo.cli import run

run()
