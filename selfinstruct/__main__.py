from selfinstruct import interrupts

interrupts.install()  # before the heavier imports: a signal from here on stops the job cleanly

from selfinstruct.cli import main  # noqa: E402

main()
