from socket import *

ip_port = ('127.0.0.1', 8080)
buffer_size = 1024
encoding = 'utf-8'
back_log = 10

tcp_client = socket(AF_INET, SOCK_STREAM)

tcp_client.connect(ip_port)

while True:
    value = input('请输入命令:')

    if not value:
        continue

    if value == 'quit':
        break

    send_data = value.encode(encoding)
    tcp_client.send(send_data)

    receive_data = tcp_client.recv(buffer_size)
    receive_data_str = receive_data.decode('gbk')
    print('执行结果', receive_data_str)

tcp_client.close()
