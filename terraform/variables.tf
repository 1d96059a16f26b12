# ---------------------------------------------------------------------------
# Where
# ---------------------------------------------------------------------------

variable "name" {
  description = "Name of this deployment; prefixes every resource. One deployment per launch is the normal use (e.g. bigtap-2025-11-blackfriday)."
  type        = string
  default     = "bigtap"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,23}$", var.name))
    error_message = "name must be 2-24 characters of lowercase letters, digits and dashes, starting with a letter (it ends up in MemoryDB and ALB names, which are short)."
  }
}

variable "aws_region" {
  description = "AWS region of the VPC."
  type        = string
}

variable "vpc_id" {
  description = "Existing VPC to deploy into."
  type        = string
}

variable "public_subnet_ids" {
  description = "Existing public subnets for the internet-facing ALB, one per availability zone."
  type        = list(string)

  validation {
    condition     = length(var.public_subnet_ids) >= 2
    error_message = "The ALB needs subnets in at least two availability zones."
  }
}

variable "private_subnet_ids" {
  description = "Existing private subnets (with a route to S3 and SSM, through a NAT gateway or VPC endpoints) for the nodes, the consumers and the store. Their count is the number of availability zones the sizing module spreads over."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 2 && length(var.private_subnet_ids) <= 6
    error_message = "Give 2 to 6 private subnets, one per availability zone."
  }
}

variable "alb_ingress_cidr_blocks" {
  description = "Who may reach the public HTTPS listener."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "aws_api_egress_cidr_blocks" {
  description = "Where nodes and consumers may open HTTPS (port 443) connections: SSM, Auto Scaling (liveness reports) and the order backend. S3 is always allowed separately, through the region's S3 prefix list (a gateway endpoint routes to S3's public addresses, not to the VPC CIDR). Narrow this to the VPC CIDR only when interface endpoints serve ssm, ssmmessages and autoscaling and the order backend is inside the VPC."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "prometheus_security_group_ids" {
  description = "Security groups of the Prometheus servers allowed to scrape nodes (port 8080) and consumers (port 9091) directly inside the VPC."
  type        = list(string)
  default     = []
}

variable "loadgen_security_group_ids" {
  description = "Security groups of load generators inside the VPC allowed to reach the nodes' port 8080 directly (loadtest/run in remote mode: one node's capacity, the admin API for the sale's accounting, /metrics). Empty outside load tests."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Extra tags for every resource."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------------------
# Edge
# ---------------------------------------------------------------------------

variable "certificate_arn" {
  description = "ACM certificate for the public HTTPS listener."
  type        = string
}

variable "alb_access_logs_bucket" {
  description = "Existing S3 bucket (with the ELB log-delivery bucket policy) receiving the ALB access logs."
  type        = string
}

variable "waf_web_acl_arn" {
  description = "Optional WAFv2 web ACL to associate with the ALB. bigtap rate-limits buyers itself; attach one only if the platform mandates it, and load-test with it."
  type        = string
  default     = null
}

# ---------------------------------------------------------------------------
# Release and secrets
# ---------------------------------------------------------------------------

variable "artifact_bucket" {
  description = "S3 bucket holding the release binary (built with `cargo build --release --features tls`)."
  type        = string
}

variable "artifact_key" {
  description = "S3 key of the release binary, e.g. releases/bigtap-0.1.0-x86_64-linux. Changing it rolls the fleet (instance refresh): never during a sale."
  type        = string
}

variable "artifact_sha256" {
  description = "SHA-256 of the release binary; a node refuses to start a binary that does not match."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.artifact_sha256))
    error_message = "artifact_sha256 must be 64 lowercase hex digits (sha256sum output)."
  }
}

variable "ssm_parameter_prefix" {
  description = "Prefix of the SecureString parameters read at boot: <prefix>/session-keys, /ticket-keys, /admin-key, /backend-key, /store-password. Create them with `aws ssm put-parameter --type SecureString` before applying; terraform only ever sees their names."
  type        = string
  default     = "/bigtap/prod"

  validation {
    condition     = can(regex("^(/[A-Za-z0-9_.-]+)+$", var.ssm_parameter_prefix))
    error_message = "ssm_parameter_prefix must look like /bigtap/prod (leading slash, no trailing slash)."
  }
}

variable "ssm_kms_key_arn" {
  description = "Customer-managed KMS key the SecureString parameters are encrypted with; null when they use the AWS-managed aws/ssm key."
  type        = string
  default     = null
}

# ---------------------------------------------------------------------------
# Machines
# ---------------------------------------------------------------------------

variable "ami_id" {
  description = <<-EOT
    AMI of every instance, pinned: Amazon Linux 2023 (systemd, AWS CLI v2, python3) of var.architecture.
    A new id rolls the whole fleet (instance refresh), so it changes only by a deliberate edit, never
    during a launch. Find the current one with:
      aws ssm get-parameter --region <region> --query Parameter.Value --output text \
        --name /aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64
    (arm64 for Graviton), and update it between launches (RUNBOOK "Updating the AMI").
  EOT
  type        = string

  validation {
    condition     = can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must be an AMI id like ami-0123456789abcdef0."
  }
}

variable "architecture" {
  description = "CPU architecture of the release binary and the instances: x86_64 or arm64."
  type        = string
  default     = "x86_64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "architecture must be x86_64 or arm64."
  }
}

variable "node_instance_type" {
  description = "Instance type of `bigtap serve` nodes. node_capacity_rps must be measured on this type."
  type        = string
  default     = "c7i.xlarge"
}

variable "consumer_instance_type" {
  description = "Instance type of `bigtap orders` consumers (network-bound, small)."
  type        = string
  default     = "t3.small"
}

variable "enable_session_manager" {
  description = "Let operators reach nodes with `aws ssm start-session` (no SSH, no key pairs) to run `bigtap sale ...`. Grants only the Session Manager channel actions (iam.tf), not AmazonSSMManagedInstanceCore, whose ssm:GetParameter* on every parameter would let the consumers read the front tier's keys."
  type        = bool
  default     = true
}

# ---------------------------------------------------------------------------
# bigtap settings (non-secret; they go to /etc/bigtap/*.env on the instances)
# ---------------------------------------------------------------------------

variable "lease_ttl_ms" {
  description = "BIGTAP_LEASE_TTL_MS: how long a silent node's lease lives before another node may reclaim it."
  type        = number
  default     = 3000
}

variable "user_rate" {
  description = "BIGTAP_USER_RATE: requests per second per buyer (0 turns it off)."
  type        = number
  default     = 2
}

variable "address_rate" {
  description = "BIGTAP_ADDRESS_RATE: requests per second per client address, taken from X-Forwarded-For set by the ALB (0 turns it off; carrier NAT puts many buyers behind one address)."
  type        = number
  default     = 0
}

variable "orders_sink_url" {
  description = "Order backend endpoint the consumers POST winners to (`bigtap orders --sink`)."
  type        = string

  validation {
    condition     = can(regex("^https://[^/:]+(:443)?(/.*)?$", var.orders_sink_url))
    error_message = "orders_sink_url must be an https:// URL on port 443 (winners carry purchase tokens; the consumers' security group opens 443 only)."
  }
}

variable "alb_idle_timeout_s" {
  description = "Idle timeout of the ALB's connections, in seconds. Must stay below node_idle_timeout_ms so the ALB, never the node, closes an idle keep-alive connection."
  type        = number
  default     = 60

  validation {
    condition     = var.alb_idle_timeout_s >= 1 && var.alb_idle_timeout_s <= 4000
    error_message = "alb_idle_timeout_s must be between 1 and 4000."
  }
}

variable "node_idle_timeout_ms" {
  description = "BIGTAP_IDLE_TIMEOUT_MS (`bigtap serve --idle-timeout-ms`): how long a node keeps an idle keep-alive connection. Above the ALB's idle timeout, or the ALB sends requests on connections the node is closing (intermittent 502s)."
  type        = number
  default     = 75000

  validation {
    condition     = var.node_idle_timeout_ms > var.alb_idle_timeout_s * 1000
    error_message = "node_idle_timeout_ms must be greater than alb_idle_timeout_s x 1000."
  }
}

variable "liveness_failures" {
  description = "Consecutive failed liveness checks (every 10 s: /healthz on nodes, the metrics listener on consumers) after which an instance reports itself unhealthy and the ASG replaces it. systemd restarts a crashed process within 2 s, so this only catches a hung or crash-looping one."
  type        = number
  default     = 6

  validation {
    condition     = var.liveness_failures >= 3 && floor(var.liveness_failures) == var.liveness_failures
    error_message = "liveness_failures must be a whole number >= 3."
  }
}

variable "liveness_grace_s" {
  description = "Seconds after boot before the first liveness check (download, start, first store connection)."
  type        = number
  default     = 300

  validation {
    condition     = var.liveness_grace_s >= 60
    error_message = "liveness_grace_s must be at least 60."
  }
}

# ---------------------------------------------------------------------------
# Alarms outside Prometheus
# ---------------------------------------------------------------------------

variable "alarm_sns_topic_arns" {
  description = "SNS topics notified by the CloudWatch alarms (store memory). Subscribe the pager to one."
  type        = list(string)
  default     = []
}

variable "store_memory_alarm_percent" {
  description = "Alarm when a store node uses more than this share of its memory (percent) for 3 minutes. With noeviction a full store stops the sale."
  type        = number
  default     = 70

  validation {
    condition     = var.store_memory_alarm_percent >= 10 && var.store_memory_alarm_percent <= 90
    error_message = "store_memory_alarm_percent must be between 10 and 90."
  }
}

# ---------------------------------------------------------------------------
# Store (MemoryDB)
# ---------------------------------------------------------------------------

variable "store_node_type" {
  description = "MemoryDB node type. shard_capacity_ops must be measured on it."
  type        = string
  default     = "db.r7g.xlarge"
}

variable "store_replicas_per_shard" {
  description = "Replicas per shard (in other zones) for fast failover. Durability does not depend on them: MemoryDB acknowledges a write only once its multi-AZ transaction log has it."
  type        = number
  default     = 1

  validation {
    condition     = var.store_replicas_per_shard >= 0 && var.store_replicas_per_shard <= 5
    error_message = "store_replicas_per_shard must be between 0 and 5."
  }
}

variable "store_user_name" {
  description = "MemoryDB ACL user bigtap connects as; null (the default) uses the deployment's name. MemoryDB user names are account-wide: two deployments must never share one, or the second apply rewrites the first one's password. Its password is the SecureString <ssm_parameter_prefix>/store-password."
  type        = string
  default     = null

  validation {
    condition     = var.store_user_name == null || try(can(regex("^[a-z][a-z0-9-]{0,39}$", var.store_user_name)) && var.store_user_name != "default", false)
    error_message = "store_user_name must be lowercase letters, digits and dashes, and not the reserved 'default'."
  }
}

variable "store_access_string" {
  description = "ACL rules of the bigtap user: its own key prefix, every command but administrative ones (CONFIG, DEBUG, ...)."
  type        = string
  default     = "on ~bigtap:* &* +@all -@admin"
}

variable "store_password_version" {
  description = "Bump this after changing <prefix>/store-password in SSM: the next apply pushes the new password to the MemoryDB user. Then roll the instances (see RUNBOOK)."
  type        = number
  default     = 1
}

variable "store_snapshot_retention_days" {
  description = "Daily MemoryDB snapshots kept. The transaction log is the durability; snapshots are for the audit after a sale."
  type        = number
  default     = 3
}

# ---------------------------------------------------------------------------
# Sizing (see modules/sizing)
# ---------------------------------------------------------------------------

variable "peak_buyers_per_second" {
  description = "Forecast peak of buyer requests per second over all concurrent sales."
  type        = number
}

variable "node_capacity_rps" {
  description = "Requests per second one node handles, as measured by `loadtest/run` on node_instance_type."
  type        = number
}

variable "headroom" {
  description = "Spare capacity above the forecast, as a fraction (0.5 = sized for 1.5x the peak)."
  type        = number
  default     = 0.5
}

variable "survive_zone_loss" {
  description = "Size so the peak still fits after losing one availability zone."
  type        = bool
  default     = true
}

variable "hot_sales" {
  description = "Sales hot at the same moment."
  type        = number
  default     = 1
}

variable "winners_per_second" {
  description = "Forecast peak of winners per second over all sales."
  type        = number
}

variable "shard_capacity_ops" {
  description = "Store script calls per second one shard of store_node_type sustains."
  type        = number
  default     = 20000
}

variable "consumer_delivery_rate" {
  description = "Winners per second one consumer delivers to the order backend."
  type        = number
  default     = 200
}

variable "store_bytes_per_winner" {
  description = "Store memory per sold unit, in bytes, from the \"store bytes per winner\" line of a loadtest/run report."
  type        = number
  default     = 2048
}

variable "units_per_sale" {
  description = "Stock of the largest sale of the launch."
  type        = number
  default     = 100000
}

variable "sales_in_store" {
  description = "Sales the store holds until teardown (every sale of the launch)."
  type        = number
  default     = 1
}

variable "store_node_memory_bytes" {
  description = "Memory of one node of store_node_type, in bytes (db.r7g.xlarge: 26.32 GiB = 28260695490)."
  type        = number
  default     = 28260695490
}

variable "node_count_override" {
  description = "Emergency override of the sized node count (null = use the sizing module). Prefer fixing the inputs; see RUNBOOK."
  type        = number
  default     = null
}

# ---------------------------------------------------------------------------
# Schedule
# ---------------------------------------------------------------------------

variable "sale_start" {
  description = "When the first sale of this launch opens, UTC, e.g. 2025-11-28T12:00:00Z."
  type        = string

  validation {
    condition     = can(regex("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$", var.sale_start)) && can(timeadd(var.sale_start, "0s"))
    error_message = "sale_start must be a UTC time like 2025-11-28T12:00:00Z."
  }
}

variable "sale_end" {
  description = "When the last sale of this launch ends, UTC. Must be after sale_start."
  type        = string

  validation {
    condition     = can(regex("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$", var.sale_end)) && can(timeadd(var.sale_end, "0s"))
    error_message = "sale_end must be a UTC time like 2025-11-28T14:00:00Z."
  }

  validation {
    condition     = !can(timecmp(var.sale_end, var.sale_start)) || try(timecmp(var.sale_end, var.sale_start) > 0, false)
    error_message = "sale_end must be after sale_start."
  }
}

variable "scale_up_lead" {
  description = "How long before sale_start the scheduled safety-net scale-up runs (a Go duration, e.g. 90m). Leave time for boot, readiness and a smoke test."
  type        = string
  default     = "90m"

  validation {
    condition     = can(timeadd("2000-01-01T00:00:00Z", var.scale_up_lead)) && !startswith(var.scale_up_lead, "-")
    error_message = "scale_up_lead must be a positive duration such as 90m or 2h."
  }
}

variable "scale_down_delay" {
  description = "How long after sale_end the scheduled scale-down runs. Must cover the ticket TTL so the order backend can still confirm or release pending tickets at full capacity."
  type        = string
  default     = "2h"

  validation {
    condition     = can(timeadd("2000-01-01T00:00:00Z", var.scale_down_delay)) && !startswith(var.scale_down_delay, "-")
    error_message = "scale_down_delay must be a positive duration such as 2h."
  }
}

variable "idle_nodes" {
  description = "Front-tier nodes kept after the scale-down until teardown: the order backend's confirm/release calls and the ticket sweeper still need a node."
  type        = number
  default     = 2

  validation {
    condition     = var.idle_nodes >= 1 && floor(var.idle_nodes) == var.idle_nodes
    error_message = "idle_nodes must be a whole number >= 1 (0 would strand pending tickets until teardown)."
  }
}
