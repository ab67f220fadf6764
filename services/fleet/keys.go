package fleet

import "strings"

// Object keys in the fleet's bucket. Everything a job writes lives under JobPrefix (plan, header,
// shards, checkpoint) or OutputPrefix (the result), so a cancelled job is removed with two prefix
// deletes. Shard keys depend on the job and task only, never on the attempt: a re-run of a task
// overwrites its shard with the same bytes instead of leaving a second one.

// JobPrefix holds a job's intermediate objects.
func JobPrefix(job string) string { return "jobs/" + job + "/" }

// PlanKey is the job's plan (JSON).
func PlanKey(job string) string { return JobPrefix(job) + "plan.json" }

// HeaderKey is the job's encoded GGUF header.
func HeaderKey(job string) string { return JobPrefix(job) + "header.bin" }

// ShardPrefix holds the job's shards.
func ShardPrefix(job string) string { return JobPrefix(job) + "shards/" }

// ShardKey is the output of one task.
func ShardKey(job, task string) string { return ShardPrefix(job) + task + ".bin" }

// CheckpointKey is the job's Checkpoint record (JSON).
func CheckpointKey(job string) string { return JobPrefix(job) + "checkpoint.json" }

// OutputPrefix holds a job's result.
func OutputPrefix(job string) string { return "outputs/" + job + "/" }

// S3URL formats an object's location as s3://bucket/key.
func S3URL(bucket, key string) string { return "s3://" + bucket + "/" + key }

// SplitS3URL is the inverse of S3URL.
func SplitS3URL(u string) (bucket, key string, ok bool) {
	rest, ok := strings.CutPrefix(u, "s3://")
	if !ok {
		return "", "", false
	}
	bucket, key, ok = strings.Cut(rest, "/")
	return bucket, key, ok && bucket != "" && key != ""
}
