package tfgrid

import (
	"encoding/json"
	"reflect"
	"regexp"
	"testing"
)

// getZDBErrorRE is every error parseGetZDB may give: fixed text plus a
// byte offset or a field path of the deployment struct, never anything
// taken from the output (which holds the namespace password).
var getZDBErrorRE = regexp.MustCompile(`^(no JSON object in tfcmd get zdb output` +
	`|tfcmd get zdb output: JSON syntax error near byte [0-9]+` +
	`|tfcmd get zdb output: field (Name|NodeID|ContractID|Zdbs(\.(name|password|size|mode|ips|port|namespace))?) has an unexpected type` +
	`|tfcmd get zdb output: JSON object is incomplete` +
	`|tfcmd get zdb output lists no zdb)$`)

// FuzzParseGetZDB feeds parseGetZDB what tfcmd might print. It must not
// panic; an error is one of the fixed messages, so no password or other
// output reaches it; a deployment that parses lists a zdb and, printed
// the way tfcmd prints it, parses to the same.
func FuzzParseGetZDB(f *testing.F) {
	fake := "4:21AM INF deploying zdbs\n4:21AM INF zdb:\n{\n\t\"Name\": \"hsabc\",\n\t\"NodeID\": 11,\n" +
		"\t\"SolutionType\": \"hsabc\",\n\t\"SolutionProvider\": null,\n\t\"NetworkName\": \"\",\n\t\"Disks\": [],\n" +
		"\t\"Zdbs\": [\n\t\t{\n\t\t\t\"name\": \"hsabc0\",\n\t\t\t\"password\": \"pw-123\",\n\t\t\t\"public\": false,\n" +
		"\t\t\t\"size\": 10,\n\t\t\t\"description\": \"\",\n\t\t\t\"mode\": \"user\",\n\t\t\t\"ips\": [\n" +
		"\t\t\t\t\"2a10:b600:1:0:c4be:94ff:feb1:8b3f\",\n\t\t\t\t\"302:9e63:7d43:b742:469d:3ec2:ab15:f75e\"\n\t\t\t],\n" +
		"\t\t\t\"port\": 9900,\n\t\t\t\"namespace\": \"11-36003-hsabc0\"\n\t\t}\n\t],\n\t\"Vms\": [],\n\t\"QSFS\": [],\n" +
		"\t\"NodeDeploymentID\": {\n\t\t\"11\": 36003\n\t},\n\t\"ContractID\": 36003,\n\t\"IPrange\": \"\"\n}\n"
	documented := `3:20PM INF zdb:
{
        "Name": "examplezdb",
        "NodeID": 11,
        "Zdbs": [
                {
                        "name": "examplezdb1",
                        "password": "password",
                        "public": false,
                        "size": 10,
                        "mode": "user",
                        "ips": ["2a10:b600:1:0:c4be:94ff:feb1:8b3f", "302:9e63:7d43:b742:469d:3ec2:ab15:f75e"],
                        "port": 9900,
                        "namespace": "81-36155-examplezdb1"
                },
                {"name": "examplezdb2", "password": "password2", "size": 10, "mode": "seq", "ips": [], "port": 9900, "namespace": "81-36155-examplezdb2"}
        ],
        "NodeDeploymentID": {"11": 36155},
        "ContractID": 36155
}
`
	for _, s := range []string{
		fake, documented,
		"3:20PM INF zdb:\nnothing here password s3cr3t\n",
		"3:20PM INF zdb:\n{\"Name\": \"x\", \"Zdbs\": [ {\"password\": \"s3cr3t\", ",
		"3:20PM INF zdb:\n{\"Name\": s3cr3t}",
		"3:20PM INF zdb:\n{\"Name\": \"x\", \"Zdbs\": []}",
		"3:20PM INF zdb:\n{\"NodeID\": \"s3cr3t\", \"Zdbs\": []}",
		"3:20PM INF zdb:\n{\"Zdbs\": [{\"password\": 12345, \"port\": \"s3cr3t\"}]}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, out []byte) {
		d, err := parseGetZDB(out)
		if err != nil {
			if !getZDBErrorRE.MatchString(err.Error()) {
				t.Fatalf("error %q is not one of parseGetZDB's fixed messages", err)
			}
			return
		}
		if len(d.Zdbs) == 0 {
			t.Fatal("accepted a deployment with no zdb")
		}
		j, err := json.MarshalIndent(d, "", "\t")
		if err != nil {
			t.Fatal(err)
		}
		again, err := parseGetZDB(append([]byte("3:20PM INF zdb:\n"), j...))
		if err != nil {
			t.Fatalf("deployment printed again is refused: %v", err)
		}
		if !reflect.DeepEqual(again, d) {
			t.Fatalf("printed again, the deployment parses to %+v, want %+v", again, d)
		}
	})
}
