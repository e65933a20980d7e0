from basalt.scheduler import cron_jobs

crons = cron_jobs()
crons.interval("tick", fn="jobs:tick", seconds=1)
