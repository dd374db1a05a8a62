"""tunasync's wire formats, shared by every /jobs feed: Go's time text and rsync's ``-h`` sizes."""

import datetime

# What Go prints for a zero time.Time, which mirror-web front-ends already expect.
ZERO_TIME_TEXT = "0001-01-01 00:00:00 +0000"
ZERO_TIMESTAMP = -62135596800
RSYNC_UNITS = "KMGTPE"


def tunasync_time(moment):
    """(text, unix seconds) as tunasync's manager writes them; zero time for None."""
    if moment is None:
        return ZERO_TIME_TEXT, ZERO_TIMESTAMP
    moment = moment.astimezone(datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S %z"), int(moment.timestamp())


def rsync_size(size):
    """A byte count the way ``rsync -h`` (3.2 and later) prints it, which tunasync passes on: 999, 1.50K, 1.29G."""
    if size is None:
        return "unknown"
    if size < 1000:
        return str(int(size))
    value, unit = float(size), ""
    for unit in RSYNC_UNITS:
        value /= 1000
        if value < 1000:
            break
    return f"{value:.2f}{unit}"
