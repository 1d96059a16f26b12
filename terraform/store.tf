# The store: Amazon MemoryDB (Redis OSS engine). Why MemoryDB and not
# ElastiCache is argued in README.md ("Store"): MemoryDB acknowledges a write
# only once its multi-AZ transaction log has it, which is what DESIGN §2's
# `appendfsync always` promises; ElastiCache replicates asynchronously and a
# failover can lose acknowledged wins.

data "aws_iam_policy_document" "store_key" {
  #checkov:skip=CKV_AWS_109: This is a KMS key policy, not an IAM policy: its Resource "*" means "this key", and granting the account root lets the account's IAM policies administer the key (AWS's default key policy). Without it the key becomes unmanageable.
  #checkov:skip=CKV_AWS_111: Same key policy: write actions are scoped to this key by construction; who may use them is decided by IAM in the account.
  #checkov:skip=CKV_AWS_356: Same key policy: "*" cannot be narrowed in a key policy, it already denotes only the key it is attached to.
  statement {
    sid       = "AccountAdministersTheKey"
    actions   = ["kms:*"]
    resources = ["*"] # in a key policy, "*" means this key

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }
}

resource "aws_kms_key" "store" {
  description             = "${var.name}: MemoryDB data, snapshots and transaction log at rest"
  enable_key_rotation     = true
  deletion_window_in_days = 7
  policy                  = data.aws_iam_policy_document.store_key.json
}

resource "aws_kms_alias" "store" {
  name          = "alias/${var.name}-store"
  target_key_id = aws_kms_key.store.key_id
}

resource "aws_memorydb_subnet_group" "store" {
  name       = "${var.name}-store"
  subnet_ids = var.private_subnet_ids
}

# bigtap cannot check the eviction policy itself on a managed store (CONFIG
# GET is forbidden there), so it runs with BIGTAP_ALLOW_UNSAFE_REDIS=true and
# this parameter group is what enforces DESIGN §2's `noeviction`: with any
# other policy, Redis may silently drop a sale's keys under memory pressure.
resource "aws_memorydb_parameter_group" "store" {
  name   = "${var.name}-store"
  family = "memorydb_redis7"

  parameter {
    name  = "maxmemory-policy"
    value = "noeviction"
  }
}

# The ACL user is created from outside terraform's state: aws_memorydb_user
# would store the password in the state in clear. This runs the AWS CLI on the
# operator's machine, reads the SecureString and passes it to MemoryDB through
# stdin, never through the command line, the plan or the state. Bump
# var.store_password_version after rotating the parameter to push it again.
resource "terraform_data" "store_user" {
  triggers_replace = [
    local.store_user,
    var.store_access_string,
    var.ssm_parameter_prefix,
    var.store_password_version,
  ]

  input = {
    region    = var.aws_region
    user_name = local.store_user
  }

  provisioner "local-exec" {
    interpreter = ["/bin/bash", "-c"]
    environment = {
      AWS_REGION         = var.aws_region
      AWS_DEFAULT_REGION = var.aws_region
      USER_NAME          = local.store_user
      ACCESS_STRING      = var.store_access_string
      PARAMETER          = "${var.ssm_parameter_prefix}/store-password"
    }
    command = <<-EOT
      set -euo pipefail
      request=$(aws ssm get-parameter --with-decryption --name "$PARAMETER" \
          --query Parameter.Value --output text |
        python3 -c 'import json, os, sys
      password = sys.stdin.read().strip()
      if len(password) < 16 or len(password) > 128:
          sys.exit("store-password must be 16 to 128 characters")
      print(json.dumps({
          "UserName": os.environ["USER_NAME"],
          "AccessString": os.environ["ACCESS_STRING"],
          "AuthenticationMode": {"Type": "password", "Passwords": [password]},
      }))')
      if aws memorydb describe-users --user-name "$USER_NAME" >/dev/null 2>&1; then
        printf '%s' "$request" | aws memorydb update-user --cli-input-json file:///dev/stdin >/dev/null
      else
        printf '%s' "$request" | aws memorydb create-user --cli-input-json file:///dev/stdin >/dev/null
      fi
      until [ "$(aws memorydb describe-users --user-name "$USER_NAME" --query 'Users[0].Status' --output text)" = active ]; do
        sleep 5
      done
    EOT
  }

  provisioner "local-exec" {
    when        = destroy
    interpreter = ["/bin/bash", "-c"]
    environment = {
      AWS_REGION         = self.input.region
      AWS_DEFAULT_REGION = self.input.region
      USER_NAME          = self.input.user_name
    }
    # Runs on teardown (the ACL, destroyed first, no longer lists the user)
    # and on replacement for a password change (the ACL still lists it: keep
    # the user, the create step updates it in place).
    command = <<-EOT
      acls=$(aws memorydb describe-users --user-name "$USER_NAME" --query 'length(Users[0].ACLNames)' --output text 2>/dev/null) || exit 0
      if [ "$acls" = 0 ]; then
        aws memorydb delete-user --user-name "$USER_NAME" >/dev/null
      fi
    EOT
  }
}

resource "aws_memorydb_acl" "store" {
  name       = "${var.name}-store"
  user_names = [local.store_user]

  depends_on = [terraform_data.store_user]
}

resource "aws_memorydb_cluster" "store" {
  name                       = "${var.name}-store"
  engine                     = "redis"
  engine_version             = "7.1"
  node_type                  = var.store_node_type
  num_shards                 = module.sizing.store_shards
  num_replicas_per_shard     = var.store_replicas_per_shard
  acl_name                   = aws_memorydb_acl.store.name
  parameter_group_name       = aws_memorydb_parameter_group.store.name
  subnet_group_name          = aws_memorydb_subnet_group.store.name
  security_group_ids         = [aws_security_group.store.id]
  tls_enabled                = true
  kms_key_arn                = aws_kms_key.store.arn
  port                       = 6379
  snapshot_retention_limit   = var.store_snapshot_retention_days
  auto_minor_version_upgrade = false # no engine change lands in the middle of a launch
  maintenance_window         = "sun:02:00-sun:03:00"
  snapshot_window            = "04:00-05:00"
  final_snapshot_name        = "${var.name}-store-final-${formatdate("YYYYMMDDhhmm", var.sale_end)}"
}

# With noeviction a full store refuses every write and the sale stops: page
# well before that. The sizing module plans store memory from the measured
# bytes per winner (output sizing.store_memory_utilization); this alarm
# watches the real figure on the fullest node of the cluster.
resource "aws_cloudwatch_metric_alarm" "store_memory" {
  alarm_name          = "${var.name}-store-memory"
  alarm_description   = "bigtap store (MemoryDB ${var.name}-store): a node uses more than ${var.store_memory_alarm_percent}% of its memory. See RUNBOOK.md, BigtapStoreMemoryHigh."
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.store_memory_alarm_percent
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  treat_missing_data  = "missing"
  alarm_actions       = var.alarm_sns_topic_arns
  ok_actions          = var.alarm_sns_topic_arns

  metric_query {
    id          = "fullest"
    label       = "DatabaseMemoryUsagePercentage of the fullest node"
    return_data = true
    period      = 60
    expression  = "SELECT MAX(DatabaseMemoryUsagePercentage) FROM SCHEMA(\"AWS/MemoryDB\", ClusterName, NodeName) WHERE ClusterName = '${aws_memorydb_cluster.store.name}'"
  }
}
